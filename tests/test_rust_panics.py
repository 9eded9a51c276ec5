"""The stderr filter drops Rust panic reports and nothing else (resources/rust_panics.py)."""

import os
import time

from resources.rust_panics import _Forwarder

REPORT = (b"\nthread '<unnamed>' (20841) panicked at /cargo/mysql_common-0.32.4/src/value/"
          b"convert/mod.rs:122:23:\nCould not retrieve `Option<NaiveDate>`: Couldn't convert "
          b"the value `Date(\"'0000-00-00'\")` to a desired type\n")
BACKTRACE = (b"stack backtrace:\n   0: __rustc::rust_begin_unwind\n   1: core::panicking::"
             b"panic_fmt\n             at /rustc/library/core/src/panicking.rs:75:14\n"
             b"note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose "
             b"backtrace.\n")
NOTE = b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"


def run(*chunks: bytes, pause: float = 0.0) -> bytes:
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    fwd = _Forwarder(r, out_w)
    fwd.thread.start()
    for c in chunks:
        os.write(w, c)
        time.sleep(pause)
    os.close(w)
    fwd.thread.join(5)
    os.close(out_w)
    data = b""
    while part := os.read(out_r, 65536):
        data += part
    os.close(r)
    os.close(out_r)
    return data


def test_reports_go_other_lines_stay():
    assert run(b"before\n", REPORT + BACKTRACE, b"after\n", pause=0.2) == b"before\nafter\n"
    assert run(b"before\n", REPORT + NOTE, b"after\n", pause=0.2) == b"before\nafter\n"
    # a later panic in the same process has no note at all
    assert run(REPORT, b"next line\n", pause=0.3) == b"next line\n"
    # another thread writes between the parts of a report
    assert run(REPORT, b"ours\n", BACKTRACE, b"after\n", pause=0.05) == b"ours\nafter\n"
    assert run(b"50%\r", REPORT, b"line\n", NOTE) == b"50%\r\nline\n"


def test_partial_lines_pass_at_once_and_blank_lines_survive():
    assert run(b"\r 10%|#", b"\r 20%|##", b"\n", b"\n", b"x\n", pause=0.2) == \
        b"\r 10%|#\r 20%|##\n\nx\n"
    assert run(b"thread pool started\n") == b"thread pool started\n"
