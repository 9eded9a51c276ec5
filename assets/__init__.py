"""Thin Dagster wrappers: each asset body calls into plain Python (hakobu.sync, hakobu.grants)."""
