"""Consent registry: who must consent (rule 8), what a consent covers (rule 9), withdrawal (rule 10)."""
