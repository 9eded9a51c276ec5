"""Keep Rust's panic report off the terminal while connectorx reads.

connectorx refuses some values by panicking (a zero date: DESIGN.md §4). hakobu expects that —
the read is run again with the zero-date guard — and the panic's message reaches Python anyway,
in the PanicException that becomes a SourceError. But Rust's panic hook first writes the report
(`thread '…' panicked at …`, the message, a note or a whole stack backtrace) straight to file
descriptor 2, where no Python code can intercept it: users saw an alarming backtrace for a table
that then loaded fine.

While at least one connectorx read runs (`silenced()`, reference counted across threads), fd 2
is a pipe; a thread copies everything from it to the real stderr at once — partial lines too,
so progress bars keep drawing — except a panic report, which it drops. A report is the header
line, then the lines the hook writes with it in one burst (the message and, with
RUST_BACKTRACE, the backtrace), up to Rust's closing `note:` line. Nothing is lost that hakobu
does not report itself: any panic's message is in the exception.
"""

import contextlib
import os
import re
import select
import threading
import time

_HEADER = re.compile(rb"^thread '[^']*'( \(\d+\))? panicked at ")
_FRAME = re.compile(rb"^\s+(\d+: |at )")
_BURST_S = 0.1          # lines the hook writes together arrive within this
_PREFIX = b"thread '"

_lock = threading.Lock()
_users = 0
_state: dict = {}
enabled = True          # the CLI's --debug turns it off: everything reaches the terminal


class _Forwarder:
    """Copies the pipe to the saved stderr, dropping panic reports."""

    def __init__(self, read_fd: int, out_fd: int):
        self.read_fd, self.out_fd = read_fd, out_fd
        self.buf = b""
        self.mid_line = False          # the current line's start was already written
        self.held_blank = False        # a blank line may be the one Rust writes first
        self.in_panic = False
        self.in_backtrace = False
        self.panic_at = 0.0
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
            ready, _, _ = select.select([self.read_fd], [], [], _BURST_S)
            if not ready:
                self.idle()
                continue
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.idle(final=True)
                return
            self.feed(chunk)

    def idle(self, final: bool = False) -> None:
        """No data for a while: a panic report is over; a held blank line was just a blank."""
        if self.in_panic and time.monotonic() - self.panic_at > _BURST_S:
            self.in_panic = self.in_backtrace = False
        if self.held_blank and (final or not self.in_panic):
            self.held_blank = False
            self.write(b"\n")
        if final and self.buf:
            if not self.in_panic:
                self.write(self.buf)
            self.buf = b""

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.line(line)
        if self.buf and not self.in_panic and (self.mid_line or not
                                                _PREFIX.startswith(self.buf[:len(_PREFIX)])):
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
        now = time.monotonic()
        if self.in_panic:
            if self.in_backtrace:
                if _FRAME.match(line):
                    self.panic_at = now
                    return
                self.in_backtrace = False
                if line.startswith(b"note: "):
                    self.in_panic = False
                    return
                self.in_panic = False          # the report is over: this line is not in it
            elif line.startswith(b"stack backtrace:"):
                self.in_backtrace, self.panic_at = True, now
                return
            elif line.startswith(b"note: "):
                self.in_panic = False
                return
            elif now - self.panic_at <= _BURST_S:
                self.panic_at = now            # the message, written with the header
                return
            else:
                self.in_panic = False
        if _HEADER.match(line):
            self.held_blank = False            # Rust's own leading blank line
            self.in_panic, self.in_backtrace, self.panic_at = True, False, now
            return
        if line == b"" or line == b"\r":
            self.flush_blank()
            self.held_blank = True
            return
        self.flush_blank()
        self.write(line + b"\n")


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
