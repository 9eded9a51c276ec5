"""The process-wide stop request (set by hakobu.stop's signal watcher, or a test): reads check it
where stopping leaves nothing half done and raise `Stopped` there. A core module: the engine's
adapters (resources/) check it; the signal handling that sets it is the app's (hakobu.stop)."""

import threading

from hakobu.errors import Stopped

_event = threading.Event()
_why: list[str] = []


def request(why: str) -> None:
    if not _event.is_set():
        _why[:] = [why]
        _event.set()


def requested() -> bool:
    return _event.is_set()


def reason() -> str | None:
    return _why[0] if _event.is_set() and _why else None


def reset() -> None:
    _event.clear()
    _why.clear()


def check(tenant: str | None = None, table: str | None = None) -> None:
    """Raise Stopped if a stop was asked for: call where stopping leaves nothing half done."""
    if _event.is_set():
        raise Stopped(f"stopped ({reason()}) before the table finished", tenant=tenant,
                      table=table, hint="nothing was left half written; rerun to complete it: "
                                        "it resumes at the last watermark")


def sleep(seconds: float, tenant: str | None = None, table: str | None = None) -> None:
    """time.sleep that a stop cuts short (and then raises Stopped)."""
    if seconds > 0:
        _event.wait(seconds)
    check(tenant, table)
