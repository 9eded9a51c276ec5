"""The internal analytics warehouse, as one tenant's run feeds it (read once, with the customer).

`open_warehouse` is called once per tenant run: it returns None when tenants/warehouse.yaml is
absent or disabled, else a WarehouseTarget whose `sink(plan)` gives the per-table sink that
sync_table and backfill feed from the same chunks as the customer's. Setup problems (no hash key,
dataset unreachable) are kept in `error` and reported on every table of the run, never turned
into unhashed output and never blocking the customer's delivery.
"""

import logging
from dataclasses import dataclass

from hakobu.config import Config, Tenant
from hakobu.errors import HakobuError
from hakobu.plan import TablePlan
from hakobu.policy import (ColumnPolicy, Hasher, any_hashed, hash_key,
                           warehouse_table)
from hakobu.sinks import WarehouseSink
from hakobu.ports import IO, Destination

log = logging.getLogger("hakobu.warehouse")


@dataclass
class WarehouseTarget:
    tenant: str
    dest: Destination | None
    config: object                # hakobu.config.Warehouse
    hasher: Hasher | None = None
    error: str | None = None
    deferred: bool = False        # merges become pending slices (hakobu.warehouse_merge)

    def sink(self, plan: TablePlan, table=None) -> WarehouseSink:
        """The warehouse sink of an (export-filtered) plan; `table` is the tenant file's entry
        for it, whose exclude list says which of this tenant's values must leave the table."""
        if self.error:
            raise HakobuError(self.error)
        wt = warehouse_table(plan, self.config)
        if wt.hashed and self.hasher is None:       # open_warehouse sets error first; belt
            raise HakobuError("warehouse: hash columns without a key")
        return WarehouseSink(self.dest, wt, self.hasher,
                             policy=ColumnPolicy.of(table, self.config),
                             incremental=plan.incremental)


def table_names(plans: list[TablePlan], w) -> list[str]:
    """The warehouse tables of these plans; one whose policy is wrong is left out here (its
    table reports that error itself, and reads its watermark on its own)."""
    names = []
    for p in plans:
        try:
            names.append(warehouse_table(p, w).table)
        except HakobuError:
            continue
    return names


def enabled(config: Config) -> bool:
    return config.warehouse is not None and config.warehouse.enabled


def open_warehouse(config: Config, tenant: Tenant, io: IO,
                   plans: list[TablePlan], *, defer: bool = False) -> WarehouseTarget | None:
    """`defer`: a delivery's merges and replaces are staged as pending slices, applied by the
    merge step (hakobu.warehouse_merge) — where the destination can (`merge_pending`)."""
    if not enabled(config):
        return None
    w = config.warehouse
    target = WarehouseTarget(tenant.tenant, None, w)
    try:
        if any_hashed(plans, w):
            target.hasher = Hasher(hash_key(w))
        dest = io.warehouse(config, tenant)
        if dest.ensure_dataset(labels={"managed-by": "hakobu", "role": "warehouse"}):
            io.grant_new_dataset(config, dest)   # grants from permissions.csv as soon as it exists
        dest.ensure_state_table()
        if defer and hasattr(dest, "merge_pending"):
            dest.deferred = target.deferred = True
        target.dest = dest
    except HakobuError as exc:
        log.error("%s: warehouse disabled for this run: %s", tenant.tenant, exc)
        target.error = f"warehouse: {exc}" if not str(exc).startswith("warehouse") else str(exc)
    return target
