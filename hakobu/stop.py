"""Stopping when told: SIGTERM or Ctrl-C ends a load or backfill within seconds, safely.

A stop is a process-wide event. Reads check it where stopping is safe — before a keyset query
takes its slot of the cluster's governor, while the governor makes a read wait, between chunks
(resources/pressure.py, resources/mysql_source.py) — and raise `Stopped` there: the table fails
like any other terminal error, its staging files go, its watermark stays where the last merge
left it, so a rerun resumes exactly. Tables run in worker threads, which no signal reaches;
this event does.

`on_signals` (the CLI, main thread) learns of SIGINT and SIGTERM through `signal.set_wakeup_fd`,
whatever Python handler is installed at that moment: while Dagster executes a run it swaps in
its own handlers, which only record the signal and raise it inside user code (and never while
a run waits for a pool slot). A watcher thread sets the event at the first signal, tells the
caller (`on_signal`, e.g. to mark the run CANCELING, so Dagster ends it CANCELED; it returns
True when there is nothing to wind down, e.g. a run still waiting for a pool slot), and if the
process is still there `grace_s` later — or at a second signal, or at once after such a True —
calls `on_abandon` (mark the run canceled, free its pool claims) and exits with 128 + the
signal number.
"""

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from hakobu.cancel import _event, check, reason, request, requested, reset, sleep  # noqa: F401

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code() -> int:
    """128 + the signal that asked for the stop (130 Ctrl-C, 143 SIGTERM), as shells report."""
    why = reason() or ""
    for sig in SIGNALS:
        if sig.name in why:
            return 128 + sig
    return 130


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# long: the watcher thread and its escalation steps read best in one place
@contextlib.contextmanager
def on_signals(*, grace_s: float = 6.0, on_signal: Callable[[int], None] | None = None,
               on_abandon: Callable[[int], None] | None = None, say=None):
    """Within: SIGINT and SIGTERM ask the work to stop (see the module docstring). Outside
    Dagster's handlers SIGTERM raises KeyboardInterrupt like Ctrl-C. Main thread only (else a
    no-op, as Python allows signal set-up only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    rfd, wfd = socket.socketpair()
    wfd.setblocking(False)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    old_wakeup = signal.set_wakeup_fd(wfd.fileno(), warn_on_full_buffer=False)
    done = threading.Event()

    def watch() -> None:
        deadline = None
        while not done.is_set():
            rfd.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                data = rfd.recv(64)
            except TimeoutError:
                data = None
            except OSError:
                return
            if done.is_set() or data == b"":
                return
            sigs = [b for b in (data or b"") if b in SIGNALS]
            if data is not None and not sigs:
                continue
            if deadline is None and sigs:
                name = signal.Signals(sigs[0]).name
                request(f"{name}")
                say(f"hakobu: {name}: stopping at the next safe point (at most "
                    f"{grace_s:.0f}s); a rerun completes the work")
                leave_now = False
                if on_signal is not None:
                    with contextlib.suppress(Exception):
                        leave_now = bool(on_signal(sigs[0]))
                deadline = time.monotonic() + grace_s
                if len(sigs) < 2 and not leave_now:
                    continue
            # a second signal, or the grace period is over: give up the run, leave now
            code = exit_code()
            if on_abandon is not None:
                with contextlib.suppress(BaseException):
                    on_abandon(code)
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    watcher = threading.Thread(target=watch, name="hakobu-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGTERM, old_term)
        with contextlib.suppress(OSError):
            wfd.send(b"\0")
        watcher.join(1.0)
        rfd.close()
        wfd.close()
