"""The loaded configuration as a whole (hakobu.config.load builds it): clusters, tenants, the
warehouse, the datasets permissions.csv may name, and the tenant files left out."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hakobu.config.models import Cluster, ExtraDataset, Tenant, Warehouse
from hakobu.config.yamlfile import line_of
from hakobu.errors import ConfigError, ConfigErrors


@dataclass(frozen=True)
class ManagedDataset:
    """A BigQuery dataset whose grants permissions.csv manages."""

    project: str
    dataset: str
    location: str
    kind: Literal["customer", "warehouse", "extra"]
    tenant: str | None = None

    @property
    def id(self) -> str:
        return f"{self.project}.{self.dataset}"


@dataclass(frozen=True)
class BrokenTenant:
    """A tenant file left out of a Config loaded with `isolate=True`, and why (every error with
    its file and line). The tenant id is the file's name: the file itself may not say."""

    tenant: str
    file: str
    errors: tuple[ConfigError, ...]

    def describe(self) -> str:
        return "; ".join(str(e) for e in self.errors)


@dataclass(frozen=True)
class Config:
    root: Path
    clusters: dict[str, Cluster]
    tenants: dict[str, Tenant]
    warehouse: Warehouse | None = None
    extra_datasets: tuple[ExtraDataset, ...] = ()
    # tenant id → {key path: line} of its file, so later checks (hakobu validate against the
    # sources) can still name the line they are about
    lines: dict[str, dict[tuple, int]] = field(default_factory=dict, compare=False, repr=False)
    # tenant files left out (load_config(isolate=True)); empty in a strict load
    broken: tuple[BrokenTenant, ...] = ()

    def where(self, tenant_id: str, *loc) -> str:
        """`file:line` of a key of a tenant's file, e.g. where('a', 'tables', 0, 'primary_key')
        (the nearest enclosing key that is written, when that one is not)."""
        t = self.tenants[tenant_id]
        return f"{t.file}:{line_of(self.lines.get(tenant_id, {}), tuple(loc))}"

    def table_where(self, tenant_id: str, table: str, key: str | None = None) -> str:
        """`file:line` of a table's entry (or of one of its keys) in the tenant's file."""
        t = self.tenants[tenant_id]
        i = next((i for i, x in enumerate(t.tables) if x.name == table), None)
        if i is None:
            return self.where(tenant_id, "tables")
        return self.where(tenant_id, "tables", i, *([key] if key else []))

    @property
    def permissions_file(self) -> Path:
        return self.root / "permissions.csv"

    def managed_datasets(self) -> dict[str, ManagedDataset]:
        """Every dataset permissions.csv may name, keyed by 'project.dataset'."""
        out: dict[str, ManagedDataset] = {}
        for t in self.tenants.values():
            d = t.destination
            out[f"{d.project}.{d.dataset}"] = ManagedDataset(d.project, d.dataset, d.location,
                                                             "customer", t.tenant)
        if self.warehouse is not None:
            w = self.warehouse
            out[f"{w.project}.{w.dataset}"] = ManagedDataset(w.project, w.dataset, w.location,
                                                             "warehouse")
        for e in self.extra_datasets:
            out.setdefault(f"{e.project}.{e.dataset}",
                           ManagedDataset(e.project, e.dataset, e.location, "extra"))
        return out

    def tenant(self, tenant_id: str) -> Tenant:
        try:
            return self.tenants[tenant_id]
        except KeyError:
            for b in self.broken:
                if b.tenant == tenant_id:
                    raise ConfigErrors([ConfigError(
                        f"tenant {tenant_id!r} is left out: {b.file} is invalid",
                        hint="fix the file (`hakobu validate` lists every problem); the other "
                             "tenants are not affected"), *b.errors]) from None
            raise ConfigError(f"unknown tenant {tenant_id!r}",
                              hint=f"tenants in {self.root / 'tenants'}: "
                                   f"{', '.join(sorted(self.tenants)) or '(none)'}") from None

    def cluster_of(self, tenant: Tenant) -> Cluster:
        return self.clusters[tenant.cluster]

