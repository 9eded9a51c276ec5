"""hakobu (運ぶ, "to carry"): each tenant's MySQL tables, incrementally, into its customer's BigQuery."""

__version__ = "0.1.0"
