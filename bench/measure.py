"""Measuring tools: run a reader in its own process, snapshot the server's counters, cool the cache."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.fixtures import Server, _q

REPO = Path(__file__).resolve().parent.parent

# Server-wide counters (SHOW GLOBAL STATUS). They are global: other sessions on a shared server
# add to them, which is why run_all also samples an idle window of the same length (noise floor).
COUNTERS = (
    "Innodb_pages_read",                  # pages read from disk into the buffer pool: physical IO
    "Innodb_data_reads",                  # read IO requests (a read-ahead of 64 pages may be 1)
    "Innodb_data_read",                   # bytes read from disk
    "Innodb_buffer_pool_read_requests",   # logical page reads (hits + misses)
    "Innodb_buffer_pool_reads",           # logical reads that missed the pool (synchronous IO)
    "Innodb_buffer_pool_read_ahead",      # pages brought in by read-ahead
    "Handler_read_key",
    "Handler_read_next",
    "Created_tmp_disk_tables",
)


def counters(server: Server) -> dict[str, int]:
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS")
            status = dict(cur.fetchall())
    finally:
        conn.close()
    return {k: int(status.get(k, 0)) for k in COUNTERS}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


def run_child(job: dict, env: dict | None = None, timeout: float = 1800.0) -> dict:
    """Run one read in a fresh interpreter (bench/child.py); return its JSON result."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.child", json.dumps(job)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {job.get('reader_kind')} failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench child printed no result:\n{proc.stdout[-2000:]}"
                           f"\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["process_wall"] = wall
    return result


def measured_child(server: Server, job: dict, env: dict | None = None) -> dict:
    """run_child with the server counters' deltas over the child's whole life."""
    before = counters(server)
    result = run_child(job, env)
    result["counters"] = delta(before, counters(server))
    return result


def idle_counters(server: Server, seconds: float) -> dict:
    """Counter drift over an idle window: what other sessions add (the noise floor)."""
    before = counters(server)
    time.sleep(seconds)
    return delta(before, counters(server))


def resident_pages(server: Server, schema: str, table: str) -> int | None:
    """Pages of schema.table now in the buffer pool (None if the server will not say)."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.INNODB_BUFFER_PAGE "
                        "WHERE TABLE_NAME = %s", (f"{_q(schema)}.{_q(table)}",))
            return int(cur.fetchone()[0])
    except Exception:
        return None
    finally:
        conn.close()


def evict(server: Server, schema: str, flusher: str, rows: int) -> float:
    """Push a table out of the buffer pool by scanning `rows` rows of another, larger table in
    primary-key order (a scan's pages enter the pool's old sublist and evict what sits there).
    Returns seconds taken."""
    t0 = time.perf_counter()
    conn = server.connect(schema)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*), SUM(LENGTH(note)) FROM {_q(flusher)} "
                        "FORCE INDEX (PRIMARY) WHERE id <= %s", (rows,))
            cur.fetchall()
    finally:
        conn.close()
    return time.perf_counter() - t0
