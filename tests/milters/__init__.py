"""Milters written against the pymilter API, used by the end-to-end tests."""
