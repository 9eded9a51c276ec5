"""`hakobu stream`: the long-running realtime delivery of one source cluster (hakobu.stream)."""

import json
import signal
import sys
import zlib

from hakobu import cancel
from hakobu.binlog_health import SNAPSHOT_S
from hakobu.cli.common import EXIT_OK, tables_arg
from hakobu.config import load_config
from hakobu.errors import ConfigError
from hakobu.stream import ClusterStream
from hakobu.stream_generations import check_recover
from resources.io import LiveIO

STREAM_EXIT_CODES = """exit codes:
  0    stopped by SIGTERM or Ctrl-C (the changes read are flushed, the checkpoint recorded),
       or --once/--for done
  1    failed: the binlog cannot carry it (BinlogNotReady), a lost position (PositionLost), a
       changed source table (SourceTableChanged), another stream of the tenant runs, BigQuery
       refused; one line on stderr starting "error:" naming the fix (--debug: the traceback)"""


def register(command) -> None:
    s = command("stream", help="deliver the `delivery: realtime` tables of one source cluster "
                               "from its binlog: snapshot new tables, stream changes into "
                               "change logs, merge them at each table's cadence",
                description="One binlog reader for every tenant's realtime tables on the "
                            "cluster. Refuses a server whose binlog cannot carry it "
                            "(BinlogNotReady, with the fixes). New tables are snapshotted "
                            "(position first, the nightly reads under the read budget), then "
                            "changes are appended to `_hakobu_cl_<table>` every few seconds "
                            "and merged into the table every merge_every_minutes; "
                            "`<table>_live` shows the latest state meanwhile. SIGTERM or "
                            "Ctrl-C: the changes read are flushed, the checkpoint recorded, "
                            "exit 0. A lost position stops it with PositionLost: recover with "
                            "`--recover TENANT`. One stream per tenant at a time. See "
                            "docs/realtime.md.", epilog=STREAM_EXIT_CODES)
    s.add_argument("--cluster", help="the source cluster (default: the only one with "
                                     "realtime tables)")
    s.add_argument("--tenants", help="comma-separated tenant ids (default: every tenant with "
                                     "realtime tables on the cluster)")
    s.add_argument("--once", action="store_true",
                   help="catch up to the current end of the binlog, merge every table, exit")
    s.add_argument("--for", dest="for_seconds", type=float, metavar="SECONDS",
                   help="stream for this long, then stop as on SIGTERM")
    s.add_argument("--recover", metavar="TENANT",
                   help="re-snapshot the tenant's realtime tables (or --tables) from the "
                        "current position, then stream (after PositionLost, or to reload)")
    s.add_argument("--tables", help="with --recover: comma-separated table names")
    s.add_argument("--reader-id", type=int,
                   help="the reader's replica server_id (default: derived from the cluster "
                        "name; must differ from every server_id and replica of the cluster)")
    s.add_argument("--snapshot-hours", type=float, default=SNAPSHOT_S / 3600,
                   help="the longest snapshot expected; the guard demands binlog retention "
                        "of twice that plus 24 h (default: 1)")
    s.add_argument("--json", action="store_true", help="print the run's numbers as JSON")
    s.set_defaults(func=cmd_stream)


def _cluster(config, wanted: str | None) -> str:
    having = sorted({t.cluster for t in config.tenants.values() if t.realtime_tables})
    if wanted:
        if wanted not in config.clusters:
            raise ConfigError(f"unknown cluster {wanted!r}",
                              hint=f"clusters: {', '.join(sorted(config.clusters))}")
        return wanted
    if len(having) != 1:
        raise ConfigError("no tenant has a `delivery: realtime` table" if not having else
                          f"realtime tables on several clusters: {', '.join(having)}",
                          hint="run one `hakobu stream --cluster NAME` per cluster"
                          if having else "set delivery: realtime on a table in a tenant file")
    return having[0]


def cmd_stream(args) -> int:
    """Stream one cluster until stopped (see the parser's description)."""
    config = load_config(isolate=True)
    cluster = _cluster(config, args.cluster)
    tenants = [t.strip() for t in args.tenants.split(",")] if args.tenants else None
    if args.recover:     # refused here, before anything is read or written
        check_recover(config.tenant(args.recover), args.recover, cluster, tables_arg(args))
        tenants = sorted(set(tenants or []) | {args.recover}) if tenants else None
    elif args.tables:
        raise ConfigError("--tables goes with --recover TENANT")
    reader_id = args.reader_id or 4_000_000_000 + zlib.crc32(cluster.encode()) % 100_000_000
    io = LiveIO.from_env()
    cs = ClusterStream(config, cluster, io, reader_id=reader_id, tenants=tenants,
                       snapshot_seconds=args.snapshot_hours * 3600)

    def on_signal(signum, frame) -> None:
        cancel.request(f"{signal.Signals(signum).name}")   # a snapshot's reads stop too
        cs.stop()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cs.guard()
        cs.open()
        cs.claim()                  # one stream per tenant: a --recover beside a running one
        if args.recover:
            cs.recover(args.recover, tables_arg(args))
        snapshots = cs.snapshot_new()
        stats = cs.run(blocking=not args.once, for_seconds=args.for_seconds)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        cs.close()
        io.close()
    out = {"cluster": cluster, "snapshots": snapshots, "transactions": stats.transactions,
           "changes": stats.changes, "flushes": stats.flushes, "dropped": stats.dropped,
           "tables": {f"{ts.tenant.tenant}/{t.route.table}": {
               "appended": t.appended, "merges": t.merges, "merged_rows": t.merged_rows,
               "phase": t.state.phase if t.state else None}
               for ts in cs.tenants.values() for t in ts.tables.values()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"stream {cluster}: {stats.transactions} transactions, {stats.changes} changes, "
              f"snapshots: {', '.join(snapshots) or '-'}, dropped (no tenant's): "
              f"{sum(stats.dropped.values())}", file=sys.stderr)
    return EXIT_OK
