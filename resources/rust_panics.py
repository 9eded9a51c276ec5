"""Keep Rust's panic report off the terminal while connectorx reads.

connectorx refuses some values by panicking (a zero date: DESIGN.md §4). hakobu expects that —
the read is run again with the zero-date guard — and the panic's message reaches Python anyway,
in the PanicException that becomes a SourceError. But Rust's panic hook first writes the report
(`thread '…' panicked at …`, the message, a note or a whole stack backtrace) straight to file
descriptor 2, where no Python code can intercept it: users saw an alarming backtrace for a table
that then loaded fine.

While at least one connectorx read runs (`silenced()`, reference counted across threads), fd 2
is a pipe; a thread copies everything from it to the real stderr at once — partial lines too,
so progress bars keep drawing — except a panic report, which it drops (_Forwarder says how it
knows one). Nothing is lost that hakobu does not report itself: any panic's message is in the
exception. A panic message of several lines would show its lines after the first.
"""

import contextlib
import os
import re
import select
import threading

_HEADER = re.compile(rb"^thread '[^']*'( \(\d+\))? panicked at ")
_FRAME = re.compile(rb"^\s+(\d+: |at )")
_NOTES = (b"note: run with `RUST_BACKTRACE", b"note: Some details are omitted")
_STARTS = (b"thread '", b"note: ", b"stack backtrace:")
_IDLE_S = 0.1           # a held blank line is written when nothing follows it this long

_lock = threading.Lock()
_users = 0
_state: dict = {}
enabled = True          # the CLI's --debug turns it off: everything reaches the terminal


class _Forwarder:
    """Copies the pipe to the saved stderr, dropping panic reports.

    A report is recognised by Rust's own texts, not by timing: the header `thread '…' panicked
    at …:` and the one message line after it; Rust's notes (`note: run with
    `RUST_BACKTRACE=1` …`, `note: Some details are omitted …`); `stack backtrace:` and the
    frame lines after it — the last three wherever they come, since another thread may write
    between the parts of a report."""

    def __init__(self, read_fd: int, out_fd: int):
        self.read_fd, self.out_fd = read_fd, out_fd
        self.buf = b""
        self.mid_line = False          # the current line's start was already written
        self.held_blank = False        # a blank line may be the one Rust writes first
        self.message_next = False      # the line after a header is the panic's message
        self.in_backtrace = False
        self.thread = threading.Thread(target=self.run, name="hakobu-stderr", daemon=True)

    def write(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self.out_fd, data)
            except OSError:
                return
            data = data[n:]

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([self.read_fd], [], [], _IDLE_S)
            if not ready:
                self.flush_blank()     # a blank line alone for a while: just a blank line
                continue
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.flush_blank()
                if self.buf:
                    self.write(self.buf)
                    self.buf = b""
                return
            self.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.line(line)
        if self.buf and (self.mid_line or not _could_be_rust(self.buf)):
            self.flush_blank()
            self.write(self.buf)       # a partial line (a progress bar): now, not at its end
            self.buf = b""
            self.mid_line = True

    def flush_blank(self) -> None:
        if self.held_blank:
            self.held_blank = False
            self.write(b"\n")

    def line(self, line: bytes) -> None:
        if self.mid_line:              # the rest of a line whose start was written
            self.mid_line = False
            self.write(line + b"\n")
            return
        if self.message_next:
            self.message_next = False
            return
        if self.in_backtrace:
            if _FRAME.match(line):
                return
            self.in_backtrace = False
        if _HEADER.match(line):
            self.held_blank = False            # Rust's own leading blank line
            self.message_next = True
            return
        if line.startswith(_NOTES):
            return
        if line.startswith(b"stack backtrace:"):
            self.in_backtrace = True
            return
        if line in (b"", b"\r"):
            self.flush_blank()
            self.held_blank = True
            return
        self.flush_blank()
        self.write(line + b"\n")


def _could_be_rust(partial: bytes) -> bool:
    """A line's start that may still become part of a report: hold it until its end."""
    return any(p.startswith(partial[:len(p)]) for p in _STARTS)


def _install() -> None:
    saved = os.dup(2)
    r, w = os.pipe()
    fwd = _Forwarder(r, saved)
    fwd.thread.start()
    os.dup2(w, 2)
    os.close(w)
    _state.update(saved=saved, read=r, fwd=fwd)


def _uninstall() -> None:
    saved, r, fwd = _state.pop("saved"), _state.pop("read"), _state.pop("fwd")
    os.dup2(saved, 2)                  # the pipe's last writer is gone: the forwarder drains
    fwd.thread.join(2.0)
    os.close(r)
    os.close(saved)


@contextlib.contextmanager
def silenced():
    """Within: Rust panic reports written to fd 2 are dropped (see the module docstring)."""
    global _users
    if not enabled:
        yield
        return
    with _lock:
        installed = True
        if _users == 0:
            try:
                _install()
            except OSError:            # no usable fd 2 (a daemon): nothing to keep clean
                installed = False
        if installed:
            _users += 1
    if not installed:
        yield
        return
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _uninstall()


def shutdown() -> None:
    """Before os._exit: put stderr back and let the forwarder write what it holds."""
    global _users
    with _lock:
        if _users:
            _users = 0
            _uninstall()
