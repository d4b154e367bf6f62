"""Governance records: the tables compliance and model risk rely on."""
