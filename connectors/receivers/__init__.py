"""Delivery to handover receivers: their own Kafka topic, or a signed HTTPS webhook on the retry ladder."""
