"""Progress of long reads — backfills and first loads: rows done against an estimated total.

Process-wide listeners: the CLI registers a progress bar here, then runs the Dagster job in
process; the asset logs lines for backfills. Nobody listening costs nothing: a first load asks
the source for its estimate only when there is a listener (`first_load`).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hakobu.errors import HakobuError, Stopped
from hakobu.plan import TablePlan

log = logging.getLogger("hakobu.progress")


@dataclass
class Progress:
    tenant: str
    table: str
    total: int | None                    # estimate: information_schema or a COUNT
    total_basis: str = "-"
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    mode: str = "backfill"               # or "first load"
    failed: bool = False                 # finished by an error or a stop, not complete

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed

    @property
    def eta_s(self) -> float | None:
        if not self.total or not self.rate or self.done >= self.total:
            return None if not self.total else 0.0
        return (self.total - self.done) / self.rate

    def line(self) -> str:
        total = f"{self.total:,}" if self.total else "?"
        pct = f" ({min(100.0, 100 * self.done / self.total):.0f}%)" if self.total else ""
        eta = self.eta_s
        tail = "done" if self.finished else ("ETA ?" if eta is None else f"ETA {_dur(eta)}")
        return (f"{self.tenant}/{self.table}: {self.done:,} / ~{total} rows{pct}, "
                f"{self.rate:,.0f} rows/s, {tail}")

    def advance(self, rows: int) -> None:
        self.done += rows
        notify(self)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            notify(self)

    @contextlib.contextmanager
    def finishing(self):
        """Finished when the block ends, however it ends (the bar closes; `failed` when an
        error or a stop ended it)."""
        try:
            yield self
        except BaseException:
            self.failed = True
            raise
        finally:
            self.finish()


def _dur(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


_listeners: list[Callable[[Progress], None]] = []
_listeners_lock = threading.Lock()


def add_listener(fn: Callable[[Progress], None]) -> None:
    with _listeners_lock:
        _listeners.append(fn)


def remove_listener(fn: Callable[[Progress], None]) -> None:
    with _listeners_lock:
        if fn in _listeners:
            _listeners.remove(fn)


def listening() -> bool:
    with _listeners_lock:
        return bool(_listeners)


def notify(p: Progress) -> None:
    with _listeners_lock:
        fns = list(_listeners)
    for fn in fns:
        fn(p)


def estimate(source, plan: TablePlan, gov) -> tuple[int | None, str]:
    """(estimated rows, how it was estimated), read through the cluster's governor."""
    try:
        with gov.slot(plan.tenant, plan.table):
            return source.estimate_rows(plan)
    except Stopped:
        raise
    except HakobuError as exc:
        log.warning("%s/%s: no row estimate: %s", plan.tenant, plan.table, exc)
        return None, "none"


def first_load(source, plan: TablePlan, gov) -> Progress | None:
    """A Progress for a table's first load when someone listens (the CLI's bar), else None —
    and then no estimate is asked of the source."""
    if not listening():
        return None
    total, basis = estimate(source, plan, gov)
    p = Progress(plan.tenant, plan.table, total, basis, mode="first load")
    notify(p)
    return p
