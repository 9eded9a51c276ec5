"""The names every asset module shares: asset keys, groups, the tenant partitions.

Kept apart so that assets/customer.py (the multi-asset) and the checks it reports
(assets/checks.py, assets/deadlines.py) all import from here and never from each other.
"""

import dagster as dg

from hakobu.config import Config
from hakobu.naming import table_name

GROUP = "customer"
WAREHOUSE_GROUP = "warehouse"
# the concurrency pool of every delivery (customer_tables): its limit is the number of tenant
# loads at once across all clusters (deploy/dagster.yaml), which hakobu.tonight plans with
POOL = "hakobu_mysql"


def customer_key(table: str) -> dg.AssetKey:
    """The asset of a table (its MySQL name, or its BigQuery name: the mapping is idempotent):
    `customer/<BigQuery table name>`, a valid Dagster name whatever MySQL calls the table
    (hakobu.naming: `ord$2024` is `customer/ord_2024_a76493`)."""
    return dg.AssetKey(["customer", table_name(table)])


def warehouse_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", table_name(table)])


def table_names(config: Config) -> list[str]:
    """The asset-key parts (BigQuery table names) of every tenant's tables, once each."""
    return sorted({table_name(t.name) for tenant in config.tenants.values()
                   for t in tenant.tables})


def tenant_partitions(config: Config) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(config.tenants))
