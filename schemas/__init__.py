"""Pydantic models only: the envelope, the canonical messages and each partner's own format."""
