"""What one table's run comes to (TableResult), the hooks tests inject faults through, and
the retry of transient errors. Shared by delivery (hakobu.table, hakobu.sync) and backfill."""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hakobu.errors import HakobuError, is_transient

log = logging.getLogger("hakobu.sync")


@dataclass
class TableResult:
    tenant: str
    table: str
    ok: bool = True
    error: str | None = None
    rows_read: int = 0
    rows_merged: int = 0
    bytes_staged: int = 0
    chunks: int = 0
    null_cursor_rows: int = 0
    merges: int = 0
    watermark: str = "-"
    watermark_utc: str | None = None
    complete_to_utc: str | None = None     # every source row below this instant is delivered
    duration_s: float = 0.0
    throttled_s: float = 0.0
    mode: str = "incremental"
    splits: int = 1                        # pk ranges read at once (initial loads)
    columns_added: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)
    bound: dict = field(default_factory=dict)
    customer: bool = True                  # the customer's dataset was fed
    warehouse: str = "-"                   # "-" not fed, "ok", or "failed"
    warehouse_error: str | None = None
    warehouse_rows_merged: int = 0
    warehouse_watermark: str = "-"
    extra: dict = field(default_factory=dict)   # backfill and hook metadata
    warehouse_extra: dict = field(default_factory=dict)   # the warehouse table's own
    # the customer table compared with the source after this run (verify=True, or every
    # incremental run's reconcile): a hakobu.checksums.Comparison, or None
    check: object = field(default=None, repr=False)
    # per sink kind ("customer", "warehouse"): the BigQuery table written (project.dataset.table)
    # and its columns as (BigQuery name, BigQuery type, MySQL name or None for added columns)
    landed: dict = field(default_factory=dict, repr=False)

    def metadata(self) -> dict:
        return {"rows_read": self.rows_read, "rows_merged": self.rows_merged,
                "bytes_staged": self.bytes_staged, "chunks": self.chunks,
                "merges": self.merges, "watermark": self.watermark,
                "watermark_utc": self.watermark_utc or "-",
                "complete_to_utc": self.complete_to_utc or "-",
                "duration_s": round(self.duration_s, 3), "throttled_s": round(self.throttled_s, 3),
                "mode": self.mode, "splits": self.splits,
                "null_cursor_rows": self.null_cursor_rows,
                "columns_added": ", ".join(self.columns_added) or "-",
                "withheld_columns": ", ".join(self.withheld) or "-",
                "warehouse": self.warehouse,
                **{f"bound_{k}": str(v) for k, v in self.bound.items()},
                **self.extra}

    def warehouse_metadata(self) -> dict:
        return {"rows_read": self.rows_read, "rows_merged": self.warehouse_rows_merged,
                "watermark": self.warehouse_watermark, "watermark_utc": self.watermark_utc or "-",
                "duration_s": round(self.duration_s, 3), "mode": self.mode,
                "read_shared_with_customer": self.customer,
                "withheld_columns": ", ".join(self.withheld) or "-", **self.warehouse_extra}


class Hooks:
    """Points where tests inject faults; production never sets them."""

    def __init__(self, **points: Callable[..., None]):
        self.points = points

    def __call__(self, name: str, **info) -> None:
        fn = self.points.get(name)
        if fn is not None:
            fn(**info)


NO_HOOKS = Hooks()


def failed_result(tenant: str, table: str, exc: Exception, what: str = "failed") -> TableResult:
    """A table's failure as its result, so the tenant's other tables still load.

    hakobu's own errors (HakobuError) already say what happened and what to do. Anything else
    (a KeyError, a TypeError, a pyarrow error) is a bug or a case nobody foresaw: it must not
    take the tenant's other tables down with it, so it is caught here too (Exception only — a
    KeyboardInterrupt or a dying process still stops the run), named with its type, and logged
    with its traceback at debug level. Every unit of work is idempotent, so a rerun after the
    fix resumes from the table's last watermark."""
    if isinstance(exc, HakobuError):
        log.error("%s/%s %s: %s", tenant, table, what, exc)
        return TableResult(tenant, table, ok=False, error=str(exc))
    log.error("%s/%s %s with an unexpected %s: %s", tenant, table, what, type(exc).__name__, exc)
    log.debug("%s/%s: traceback of the unexpected error", tenant, table, exc_info=exc)
    text = str(HakobuError(
        f"unexpected {type(exc).__name__} in table {table!r}: {exc!r}", tenant=tenant, table=table,
        hint="only this table stopped; the tenant's other tables went on. Its watermark moves "
             "only after a merge, so a rerun is exact; run with debug logging (hakobu.sync) for "
             "the traceback and report it"))
    return TableResult(tenant, table, ok=False, error=text)


RETRIES = int(os.environ.get("HAKOBU_RETRIES", "3"))
RETRY_BASE_S = float(os.environ.get("HAKOBU_RETRY_BASE_SECONDS", "1"))


def with_retries(fn, *, what: str, attempts: int | None = None, base_s: float | None = None):
    """Run fn; on a transient error wait (base, 4x base, ...) and run it again. Every unit of
    work is idempotent (MERGE on the key, watermark after it), so a retry resumes where the
    last committed watermark stands. Terminal errors are raised at once."""
    attempts = RETRIES if attempts is None else attempts
    base_s = RETRY_BASE_S if base_s is None else base_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = base_s * 4 ** (attempt - 1)
            log.warning("%s: transient error (attempt %d of %d), retrying in %.0fs: %s",
                        what, attempt, attempts, delay, exc)
            time.sleep(delay)
