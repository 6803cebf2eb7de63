"""Warm handovers: requested by caseworkers, sent under consent (rule 9), answered by receivers."""
