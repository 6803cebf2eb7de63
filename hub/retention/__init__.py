"""Retention: personal data past its term is purged (`purge`); the terms are in `config`."""
