"""The REST API (SPEC §3, §4)."""
