"""Helpers for the quota tests: work run in real OS processes against the shared store."""
