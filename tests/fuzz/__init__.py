"""Fuzz tier: mutated sessions against the real daemon (issue 13)."""
