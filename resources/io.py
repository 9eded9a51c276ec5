"""The real IO of a run (hakobu.ports.IO): MySQL sources and their governors, BigQuery datasets.

One `LiveIO` is made by whoever runs the engine — the Dagster resources (resources.dagster), the
CLI, a test — and handed to it. It owns one MySQLSource (connection pool) and one ReadGovernor
per cluster for its own lifetime, not the process's: two LiveIOs never share a pool or a
budget by accident, and a governor is made once, with its probe, by the only code that makes
them. The BigQuery side is stateless beyond its settings (each destination makes its client).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from hakobu.config import Cluster, Config, Tenant
from hakobu.grants.apply import apply_dataset_grants
from hakobu.policy import TENANT_BUCKETS, tenant_bucket
from resources.bigquery_client import BigQuerySettings
from resources.bigquery_dest import BigQueryDestination
from resources.mysql_source import MySQLSource
from resources.pressure import ReadGovernor, make_governor
from resources.warehouse_dest import WarehouseDestination


def default_work_dir() -> Path:
    """Where staging Parquet files are written before their load job (HAKOBU_WORK_DIR)."""
    return Path(os.environ.get("HAKOBU_WORK_DIR") or Path(tempfile.gettempdir()) / "hakobu")


class LiveIO:
    """MySQL + BigQuery, as configured. Thread-safe."""

    def __init__(self, settings: BigQuerySettings, work_dir: Path | None = None, *,
                 reader: str | None = None):
        self.settings = settings
        self.work_dir = Path(work_dir) if work_dir else default_work_dir()
        self.reader = reader
        self._lock = threading.Lock()
        self._sources: dict[Cluster, MySQLSource] = {}
        self._gates: dict[Cluster, ReadGovernor] = {}

    @classmethod
    def from_env(cls) -> "LiveIO":
        return cls(BigQuerySettings.from_env())

    def source(self, cluster: Cluster) -> MySQLSource:
        # keyed by the whole frozen Cluster: the same name with another zone or budget is
        # another source
        with self._lock:
            if cluster not in self._sources:
                self._sources[cluster] = MySQLSource(cluster, reader=self.reader)
            return self._sources[cluster]

    def gate(self, cluster: Cluster) -> ReadGovernor:
        source = self.source(cluster)
        with self._lock:
            if cluster not in self._gates:
                self._gates[cluster] = make_governor(cluster, source)
            return self._gates[cluster]

    def customer(self, tenant: Tenant) -> BigQueryDestination:
        d = tenant.destination
        return BigQueryDestination(self.settings, d.project, d.dataset, d.location,
                                   self.work_dir)

    def warehouse(self, config: Config, tenant: Tenant) -> WarehouseDestination:
        w = config.warehouse
        return WarehouseDestination(self.settings, w.project, w.dataset, w.location,
                                    self.work_dir, tenant=tenant.tenant,
                                    bucket=tenant_bucket(tenant.tenant), buckets=TENANT_BUCKETS)

    def grant_new_dataset(self, config: Config, dest: BigQueryDestination) -> None:
        """A dataset gets its declared grants (permissions.csv) as soon as it exists."""
        apply_dataset_grants(dest.client, config, f"{dest.project}.{dest.dataset}",
                             settings=self.settings)

    def close(self) -> None:
        """Give back every pool and slot this IO holds."""
        with self._lock:
            gates, sources = list(self._gates.values()), list(self._sources.values())
            self._gates.clear()
            self._sources.clear()
        for g in gates:
            close = getattr(g, "close", None)
            if close:
                close()
        for s in sources:
            s.dispose()
