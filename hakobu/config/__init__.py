"""Tenant and cluster configuration: parsed once at the edge into frozen, typed models.

Every error names the file and line and says what to do; all errors of a load are collected and
raised together (`ConfigErrors`), so a user fixes a broken config in one pass.

Layout of a config directory (HAKOBU_CONFIG_DIR, default: the repository root):

    tenants/clusters.yaml     source clusters
    tenants/<tenant>.yaml     one file per tenant
    tenants/warehouse.yaml    the internal analytics warehouse (optional)
    permissions.csv           dataset grants

The package: hakobu.config.models (the typed models), hakobu.config.whole (the loaded
configuration as a whole), hakobu.config.load (reading a directory),
hakobu.config.checks (checks across tenant files), hakobu.config.yamlfile (YAML with lines).
Import the names from `hakobu.config`.
"""

from hakobu.config.load import load_config, load_tenant_file
from hakobu.config.models import (CLUSTERS_FILE, DATASETS_FILE, REPO_ROOT, RESERVED_FILES,
                                  WAREHOUSE_FILE, Cluster, ColumnName, Destination, ExtraDataset,
                                  Identifier, MySQLName, ReadBudget, Schedule, Secret, Source,
                                  Table, Tenant, Warehouse, config_dir)
from hakobu.config.whole import BrokenTenant, Config, ManagedDataset

__all__ = ["CLUSTERS_FILE", "DATASETS_FILE", "REPO_ROOT", "RESERVED_FILES", "WAREHOUSE_FILE",
           "BrokenTenant", "Cluster", "ColumnName", "Config", "Destination", "ExtraDataset",
           "Identifier", "ManagedDataset", "MySQLName", "ReadBudget", "Schedule", "Secret",
           "Source", "Table", "Tenant", "Warehouse", "config_dir", "load_config",
           "load_tenant_file"]
