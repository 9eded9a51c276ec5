"""Verify cost: one night's content verification reads about 1/verify_every of a full read.

    python -m bench.verify_cost [--rows N] [--every 7]    GOAL line on stdout, details on stderr
    bench.verify_cost.measure() -> dict                    the figures behind it

What is measured. One tenant's table (the read-once fixture, `hk_wh_bench.orders_<rows>`) is
delivered into a fresh dataset of the emulator. Then, on the source server's counters (SHOW
GLOBAL STATUS, `Innodb_buffer_pool_read_requests`: logical page reads, independent of what the
buffer pool holds):
- the baseline: a full read of the table as a delivery reads it (the primary-key pass);
- each of `every` consecutive nights' content slices (hakobu.verify.nightly_content: the
  source's digest query over that night's primary-key ranges; the BigQuery side does not touch
  the source), counted around the slice alone (not the key reconcile, which a night runs anyway).
The goal is the mean night over the full read; the largest night and the sum of the nights
(every bucket once: about one full read) are reported beside it.

The counters are server-wide: other sessions' reads add to them. The number of other sessions
running statements, sampled during the measurement, is printed; with any, the figures are an
upper bound.

GOAL verify-cost measured=<mean night / full read> target=<=1.25/every PASS|MISS
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

from bench.fixtures import Server, ensure_table
from bench.report import Goal
from hakobu.planning import plan_for

SCHEMA = "hk_wh_bench"
TABLE = "orders"
COUNTER = "Innodb_buffer_pool_read_requests"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def logical_reads(server: Server) -> int:
    return int(server.scalar(f"SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                             f"WHERE VARIABLE_NAME = '{COUNTER.upper()}'"))


def busy_sessions(server: Server) -> int:
    """Other sessions running a statement right now (not this probe, not sleeping)."""
    return int(server.scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                             "WHERE COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump') "
                             "AND ID <> CONNECTION_ID()"))


def write_config(root: Path, server: Server, dataset: str, table: str, every: int) -> Path:
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    (root / "tenants" / "clusters.yaml").write_text(textwrap.dedent(f"""\
        clusters:
          bench:
            host: {server.host}
            port: {server.port}
            user: {server.user}
            lag_seconds: 0
            verify_every: {every}
        """))
    (root / "tenants" / "acme.yaml").write_text(textwrap.dedent(f"""\
        tenant: acme
        cluster: bench
        source:
          schema: {SCHEMA}
        destination:
          project: hakobu-bench
          dataset: {dataset}
        schedule:
          cron: "0 2 * * *"
        deliver_by: "06:00"
        tables:
          - name: {table}
            cursor: updated_at
            chunk_rows: 50000
        """))
    (root / "permissions.csv").write_text("dataset,role,member\n")
    return root


def measure(rows: int = 200_000, every: int = 7) -> dict:
    from hakobu.checksums import compare_table
    from hakobu.config import load_config
    from hakobu.localenv.emulator import start_emulator
    from hakobu.sinks import build_sinks
    from hakobu.sync import sync_tenant
    from resources.io import LiveIO
    from hakobu.verify import night_number, nightly_content
    from resources.mysql_source import iter_chunks

    import hakobu.table_checks as hs

    verify_content = hs.VERIFY_CONTENT
    server = Server.from_env()
    table = f"{TABLE}_{rows}"
    ensure_table(server, SCHEMA, table, rows, log=log)
    tmp = Path(tempfile.mkdtemp(prefix="hk_vc_bench_"))
    emu = None
    saved = os.environ.get("HAKOBU_BIGQUERY_ENDPOINT")
    try:
        if not saved:
            emu = start_emulator(tmp / "bq")
            os.environ["HAKOBU_BIGQUERY_ENDPOINT"] = emu.url
        dataset = f"hk_vc_b_{uuid.uuid4().hex[:8]}"
        config = load_config(write_config(tmp / "cfg", server, dataset, table, every))
        hs.VERIFY_CONTENT = False                     # the delivery itself: no slice yet
        io = LiveIO.from_env()
        [r] = sync_tenant(config, "acme", io=io)
        if not r.ok:
            raise RuntimeError(f"delivery failed: {r.error}")
        tenant = config.tenant("acme")
        source = io.source(config.cluster_of(tenant))
        dest = io.customer(tenant)
        plan, [sink], _, _ = build_sinks(plan_for(source, tenant, tenant.table(table)),
                                         tenant.table(table), dest, None)
        busy = [busy_sessions(server)]
        before = logical_reads(server)
        read = sum(b.num_rows for b, _ in iter_chunks(source, plan, "full", None, None))
        full = logical_reads(server) - before
        busy.append(busy_sessions(server))
        keys = compare_table(source, dest, plan)
        start = night_number()
        nights = []
        for k in range(every):
            before = logical_reads(server)
            cmp, note = nightly_content(source, sink, plan, keys, every=every, night=start + k)
            nights.append(logical_reads(server) - before)
            busy.append(busy_sessions(server))
            if not cmp.equal:
                raise RuntimeError(f"night {k}: {cmp.summary()}")
            log(f"  verify-cost night {k + 1}/{every}: {cmp.buckets_compared} buckets, "
                f"{cmp.rows_compared:,} rows, {nights[-1]:,} logical page reads "
                f"({nights[-1] / full:.3f} of a full read)")
        full_pass = note.full_pass if note is not None else None
    finally:
        hs.VERIFY_CONTENT = verify_content
        if emu is not None:
            emu.stop()
            os.environ.pop("HAKOBU_BIGQUERY_ENDPOINT", None)
        shutil.rmtree(tmp, ignore_errors=True)
    mean = sum(nights) / len(nights)
    return {"rows": rows, "rows_read_full": read, "every": every, "full_read": full,
            "nights": nights, "mean_night": mean, "ratio": mean / full if full else None,
            "max_ratio": max(nights) / full if full else None,
            "sum_ratio": sum(nights) / full if full else None,
            "full_pass": full_pass, "busy_sessions_max": max(busy)}


def goal(m: dict) -> Goal:
    quiet = ("quiet server" if m["busy_sessions_max"] == 0 else
             f"{m['busy_sessions_max']} other sessions were running statements: an upper bound")
    note = (f"{m['rows']:,} rows, verify_every {m['every']}; logical page reads: full read "
            f"{m['full_read']:,}, nights {', '.join(f'{n:,}' for n in m['nights'])}; largest "
            f"night {m['max_ratio']:.3f}x, all nights {m['sum_ratio']:.2f}x; {quiet}")
    return Goal("verify-cost", m["ratio"], "<=", round(1.25 / m["every"], 3), "x", note)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.verify_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--every", type=int, default=7)
    args = ap.parse_args(argv)
    m = measure(args.rows, args.every)
    log(json.dumps(m, indent=2, default=str))
    g = goal(m)
    print(g.line())
    if m["busy_sessions_max"]:
        print(f"note: {m['busy_sessions_max']} other sessions were active during the "
              "measurement; the counters are server-wide")
    return 0 if g.passed else 1


if __name__ == "__main__":
    sys.exit(main())
