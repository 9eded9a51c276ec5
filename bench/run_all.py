"""`python -m bench.run_all` (= `make bench`): every goal of issue 4, one `GOAL` line each.

    python -m bench.run_all                 full run: 2M/4M-row tables, ~10-15 min here
    python -m bench.run_all --quick         smoke run on small tables (figures not meaningful)

Progress goes to stderr; stdout carries only the GOAL lines (one per goal, at the end), so
`make bench | grep ^GOAL` is the summary. BENCHMARKS.md is rewritten with the figures, the date
and the machine by a full run of every goal (quick or --only runs write
.local/bench/BENCHMARKS.partial.md unless --out); the raw figures go to bench/BENCHMARKS.json
(beside --out otherwise), from which --render-only rewrites the report after bench/analysis.md
(the hand-written analysis appended to it) changes. `read-once` is bench/read_once.py's goal
(the internal warehouse reads the source once) and `verify-cost` bench/verify_cost.py's (one
night's content-verification slice against a full read), run here so `make bench` prints every
goal. `night` is bench/night.py's simulated night (issue #14: tenants on three private
MariaDB servers, the strict BigQuery layer, runs admitted as the queued run coordinator does;
60 tenants by default — the issue's 300 need `--night-tenants 300`, ~2-3 h on a 2-core machine,
where the emulator's ~8 jobs/s bounds the night; `--quick --only night` is a 12-tenant smoke
run; `--night-latency` / `--night-budget` / `--night-changes` change it).

Fixture tables live in the `hakobu_bench` schema of the server in HAKOBU_MYSQL_HOST/PORT/USER
(default 127.0.0.1:3306, root) and are reused across runs.
"""

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from bench import goals
from bench.fixtures import SCHEMA, Server, ensure_table, table_size
from bench.report import Goal, Report, from_json, machine_info, to_json, write

REPO = Path(__file__).resolve().parent.parent
NIGHT_TENANTS = 60   # the 300 do not fit a make bench on the emulator (bench/analysis.md)
GOAL_ORDER = ("throughput", "memory", "budget", "incremental", "fanout", "read-once",
              "verify-cost", "night", "cdc")
# the goals each block reports (op, target, unit), so a failing block still prints its lines
GOAL_NAMES = {"throughput": {"extract-vs-connectorx": (">=", 0.9, "x"),
                             "extract-vs-pandas": (">=", 10, "x")},
              "memory": {"memory-flat": ("<=", 1.15, "x"), "memory-peak": ("<", 300, "MiB")},
              "budget": {"budget-compliance": ("<=", 1.10, "x"), "budget-time": ("<=", 1.15, "x")},
              "incremental": {"incremental-cost": ("<=", 0.05, "x")},
              "fanout": {"fanout-overhead": ("<=", 1.25, "x")},
              "read-once": {"read-once": ("<=", 1.1, "x")},    # bench/read_once.py (warehouse)
              "verify-cost": {"verify-cost": ("<=", round(1.25 / 7, 3), "x")},  # verify_cost.py
              "night": {"night-failed-runs": ("<=", 0, ""), "night-quota-errors": ("<=", 0, ""),
                        "night-deadlines": ("<=", 0, ""), "night-budget": ("<=", 1.10, "x"),
                        "night-warehouse": ("<=", 0, ""), "night-pages": ("<=", 0.05, "x")},
              "cdc": {"cdc-latency": ("<=", 60, "s")}}                 # bench/cdc.py
NIGHT_ONLY = {"night", "cdc"}  # blocks that use their own servers, not the shared fixtures


def json_path(out: Path) -> Path:
    """The run's raw figures: bench/BENCHMARKS.json for the repository's report, else beside it."""
    if out.resolve() == (REPO / "BENCHMARKS.md").resolve():
        return REPO / "bench" / "BENCHMARKS.json"
    return out.with_suffix(".json")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small tables: a smoke test")
    ap.add_argument("--rows", type=int, help="rows of the base table (default 2,000,000; "
                    "--quick: 100,000); the memory table has twice as many")
    ap.add_argument("--schema", default=SCHEMA, help=f"MySQL schema of the fixtures ({SCHEMA}*)")
    ap.add_argument("--reps", type=int, help="repetitions of the fast readers (default 3; quick 1)")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(GOAL_ORDER))
    ap.add_argument("--out", type=Path, help="where to write the report (default BENCHMARKS.md)")
    ap.add_argument("--night-changes", choices=("recent", "scattered"),
                    help="night: where tonight's updates fall — among each table's newest keys "
                         "(recent, the default) or uniformly (scattered); bench/night_fixtures")
    ap.add_argument("--merge", type=Path, action="append",
                    help="with --render-only: fold another run's JSON (e.g. "
                         ".local/bench/BENCHMARKS.partial.json of an --only night run) into "
                         "the report, its goals and sections replacing those of the same name")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rewrite the report from the last run's JSON "
                         "(after editing bench/analysis.md)")
    ap.add_argument("--fanout-tenants", type=int, help="fan-out tenants (default 50; quick 3)")
    ap.add_argument("--fanout-tables", type=int, help="tables per tenant (default 5; quick 2)")
    ap.add_argument("--fanout-rows", type=int, help="rows per fan-out table (default 2,000)")
    ap.add_argument("--fanout-sync-tenants", type=int,
                    help="tenants also run through plain sync_tenant, for Dagster's overhead "
                         "(default 10; quick: all)")
    ap.add_argument("--night-tenants", type=int, help="tenants of the simulated night "
                    "(default 60; quick 12; the issue's night is 300: ~2-3 h on 2 cores)")
    ap.add_argument("--night-latency", type=float,
                    help="strict BigQuery layer latency per job in the measured night, s; time "
                         "is compressed by 1/latency (default 0.05; quick 0.02)")
    ap.add_argument("--night-budget", type=int, default=None,
                    help="read budget of cluster night-c1 in logical pages/s (c2 3/4, c3 1/2)")
    ap.add_argument("--cdc-seconds", type=float,
                    help="cdc: seconds of sustained load (default 120; quick 20)")
    ap.add_argument("--cdc-rate", type=float, help="cdc: changes/s in total (default 500)")
    ap.add_argument("--cdc-tenants", type=int, help="cdc: tenants (default 10; quick 4)")
    ap.add_argument("--cdc-seed-rows", type=int,
                    help="cdc: seeded rows per realtime table (default 2,000; quick 300)")
    ap.add_argument("--cdc-job-latency", type=float,
                    help="cdc: strict-layer latency per BigQuery job once the stream is up, s "
                         "(default 1.0, BigQuery's usual; quick 0.05)")
    ap.add_argument("--cdc-merge-in-load", action="store_true",
                    help="cdc: no warm-up, so the restarted stream's first merge round (every "
                         "table) falls in the load window (by default the load runs between "
                         "two merge rounds)")
    args = ap.parse_args(argv)
    if not args.schema.startswith(SCHEMA):
        ap.error(f"--schema must start with {SCHEMA}")
    args.rows = args.rows or (100_000 if args.quick else 2_000_000)
    args.reps = args.reps or (1 if args.quick else 3)
    args.only = [g.strip() for g in args.only.split(",")] if args.only else list(GOAL_ORDER)
    unknown = set(args.only) - set(GOAL_ORDER)
    if unknown:
        ap.error(f"unknown goal(s) {sorted(unknown)}; choose from {', '.join(GOAL_ORDER)}")
    if args.out is None:   # only a full run of every goal replaces the repository's report
        partial = args.quick or set(args.only) != set(GOAL_ORDER)
        args.out = REPO / (".local/bench/BENCHMARKS.partial.md" if partial else "BENCHMARKS.md")
    return args


def merge_run(report, other) -> None:
    """Another run's goals and sections (e.g. `--only night`) into the report, replacing those
    of the same name; each merged section says which run measured it."""
    names = {g.name for g in other.goals}
    report.goals = [g for g in report.goals if g.name not in names] + list(other.goals)
    titles = {t for t, _ in other.sections}
    when = other.started.strftime("%Y-%m-%d %H:%M UTC")
    report.sections = [sec for sec in report.sections if sec[0] not in titles] + [
        (t, f"*Measured by a separate run ({other.mode} mode, `--only`), {when}, "
            f"{other.seconds / 60:.1f} min.*\n\n{b}") for t, b in other.sections]


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.night_changes:
        os.environ["HAKOBU_NIGHT_CHANGES"] = args.night_changes
    data = json_path(args.out)
    if args.render_only:
        report = from_json(data.read_text(encoding="utf-8"))
        for extra in args.merge or ():
            merge_run(report, from_json(extra.read_text(encoding="utf-8")))
        write(report, args.out)
        if args.merge:
            data.write_text(to_json(report), encoding="utf-8")
        for g in report.goals:
            print(g.line(), flush=True)
        return 0
    t0 = time.monotonic()
    server = Server.from_env()
    report = Report(mode="quick" if args.quick else "full")
    report.machine = machine_info(server)
    log(f"bench: {report.mode} mode, {args.rows:,}-row table, machine {report.machine}")

    rows2 = 2 * args.rows
    name = f"events_{args.rows}"
    name2 = f"events_{rows2}"
    for t, n in ((name, args.rows), (name2, rows2)):
        if set(args.only) <= NIGHT_ONLY:
            break
        info = ensure_table(server, args.schema, t, n, log=log)
        size = table_size(server, args.schema, t)
        log(f"  fixture {args.schema}.{t}: {info}, {size}")
        report.fact(f"fixture `{t}`", f"{n:,} rows, data {size['data_bytes'] / 2**20:.0f} MiB "
                    f"+ index {size['index_bytes'] / 2**20:.0f} MiB, ~{size['avg_row_bytes']} B/row")
    ctx = goals.Ctx(server=server, schema=args.schema, table=name, rows=args.rows, table2=name2,
                    rows2=rows2, quick=args.quick, reps=args.reps, log=log)

    for block in GOAL_ORDER:
        if block not in args.only:
            continue
        log(f"[{block}]")
        before = len(report.goals)
        try:
            if block == "throughput":
                goals.throughput(ctx, report)
            elif block == "memory":
                goals.memory(ctx, report)
            elif block == "budget":
                from bench.budget import budget

                budget(ctx, report)
            elif block == "incremental":
                goals.incremental(ctx, report)
            elif block == "read-once":
                from bench import read_once

                m = read_once.measure(20_000 if args.quick else 200_000, 1 if args.quick else 2)
                report.goals.append(read_once.goal(m))
                report.section(
                    "6. Read once (internal warehouse on vs off)",
                    f"`bench/read_once.py`: one tenant's nightly initial load of {m['rows']:,} "
                    "rows, with the internal warehouse off and on, each in its own process; "
                    "logical page reads (`Innodb_buffer_pool_read_requests`) "
                    f"{m['logical_page_reads']['on']:,} on vs {m['logical_page_reads']['off']:,} "
                    f"off, physical {m['physical_page_reads']['on']:,} vs "
                    f"{m['physical_page_reads']['off']:,}, chunks "
                    f"{m['chunk_queries']['on']} vs {m['chunk_queries']['off']} (lowest of "
                    f"{m['reps']} runs each).")
            elif block == "verify-cost":
                from bench import verify_cost

                m = verify_cost.measure(20_000 if args.quick else 200_000)
                g = verify_cost.goal(m)
                report.goals.append(g)
                report.section(
                    "7. Content verification: one night's slice vs a full read",
                    f"`bench/verify_cost.py`: a {m['rows']:,}-row table, verify_every "
                    f"{m['every']}; logical page reads (`Innodb_buffer_pool_read_requests`) of a "
                    f"full read {m['full_read']:,}, of each night's content slice "
                    f"{', '.join(f'{n:,}' for n in m['nights'])} (mean {m['ratio']:.3f}x, "
                    f"largest {m['max_ratio']:.3f}x; the {m['every']} nights together "
                    f"{m['sum_ratio']:.2f}x: every bucket once). {g.note.split('; ')[-1]}.")
                if m["busy_sessions_max"]:
                    log(f"  verify-cost: {m['busy_sessions_max']} other sessions were active "
                        "during the measurement (server-wide counters)")
            elif block == "night":
                from bench import night   # late: its imports (Dagster, the emulator) per block

                night.night(ctx, report, tenants=args.night_tenants or (12 if args.quick else NIGHT_TENANTS),
                            latency=args.night_latency or night.default_latency(args.quick),
                            budget=args.night_budget or night.DEFAULT_BUDGET)
            elif block == "cdc":
                from bench import cdc   # late: its imports (the emulator, the strict layer)

                cdc.cdc(ctx, report, tenants=args.cdc_tenants or (4 if args.quick else 10),
                        seconds=args.cdc_seconds or (20 if args.quick else 120),
                        rate=args.cdc_rate or cdc.RATE,
                        seed_rows=args.cdc_seed_rows or (300 if args.quick else 2000),
                        job_latency=(args.cdc_job_latency if args.cdc_job_latency is not None
                                     else 0.05 if args.quick else 1.0),
                        drain_s=30 if args.quick else 120,
                        merge_in_load=args.cdc_merge_in_load)
            elif block == "fanout":
                from bench import fanout

                fanout.fanout(ctx, report, tenants=args.fanout_tenants or (3 if args.quick else 50),
                              tables=args.fanout_tables or (2 if args.quick else 5),
                              rows=args.fanout_rows or 2_000,
                              sync_tenants=args.fanout_sync_tenants or (None if args.quick else 10))
        except Exception as exc:   # one failing block must not hide the others' figures
            log(traceback.format_exc())
            done = {g.name for g in report.goals[before:]}
            for g, (op, target, unit) in GOAL_NAMES[block].items():
                if g not in done:
                    report.goals.append(Goal(g, None, op, target, unit,
                                             f"failed: {type(exc).__name__}: {exc}"[:300]))
    report.seconds = time.monotonic() - t0
    path = write(report, args.out)
    data.write_text(to_json(report), encoding="utf-8")
    log(f"bench: wrote {path} ({report.seconds / 60:.1f} min)")
    for g in report.goals:
        print(g.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
