"""`hakobu load` and `hakobu backfill`: one tenant's delivery as a Dagster run in this process
(hakobu.launch), with a progress bar per table; `hakobu merge-warehouse`: the merge step."""

import json
import sys

from tqdm import tqdm

from hakobu import stop
from hakobu.cli.common import EXIT_FAIL, EXIT_OK, tables_arg
from hakobu.config import load_config
from assets.warehouse_merge import MERGE_ASSET, MERGE_JOB
from hakobu.launch import LoadOutcome, open_instance, run_load
from hakobu.progress import add_listener, remove_listener
from hakobu.runs import process_tags
from hakobu.warehouse import enabled as warehouse_enabled
from pipelines.build import BACKFILL, build_definitions

LOAD_BAR_DELAY_S = 1.0      # a first load's bar appears once it has run this long


def _progress(args, *, delay: float = 0.0):
    """A listener drawing one bar per table (rows done / estimated total, rows/s, ETA) on
    stderr, or with --no-progress one line per finished table; and its cleanup."""
    bars: dict = {}
    off = getattr(args, "no_progress", False) or getattr(args, "json", False)

    def show(p) -> None:
        if off:
            if p.finished and p.mode == "backfill" and not getattr(args, "json", False):
                print(p.line(), file=sys.stderr, flush=True)
            return
        bar = bars.get(p.table)
        if bar is None:
            bar = bars[p.table] = tqdm(total=p.total or None, unit="rows", unit_scale=True,
                                       desc=f"{p.tenant}/{p.table}", leave=True,
                                       dynamic_ncols=True, delay=delay)
        if (p.finished and not p.failed) or (p.total and p.done > (bar.total or 0)):
            bar.total = p.done                     # the estimate was off: the rows read count
        bar.update(p.done - bar.n)
        if p.finished:
            bar.close()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return show, close


def _finish_load(args, outcome: LoadOutcome, header: str, row) -> int:
    if args.json:
        print(json.dumps(outcome.as_dict(args.tenant), indent=2, default=str))
    elif outcome.rows or outcome.ok:
        print(header)
        for r in sorted(outcome.rows, key=lambda r: r["table"]):
            print(row(r))
    if outcome.ok:
        return EXIT_OK
    if getattr(args, "debug", False):
        for text in outcome.details:
            print(text, file=sys.stderr)
    print(f"error: {outcome.error}", file=sys.stderr)
    return stop.exit_code() if stop.requested() else EXIT_FAIL


def cmd_load(args) -> int:
    """Deliver one tenant now; a bar per table for first loads that take a while."""
    config = load_config(isolate=True)   # another tenant's broken file is not ours
    show, close = _progress(args, delay=LOAD_BAR_DELAY_S)
    add_listener(show)
    try:
        outcome = run_load(config, args.tenant, tables_arg(args), quiet=not args.verbose,
                           debug=args.debug)
    finally:
        remove_listener(show)
        close()
    return _finish_load(
        args, outcome, f"{'table':<16}{'rows read':>10}{'merged':>9}{'seconds':>9}  watermark",
        lambda r: f"{r['table']:<16}{r['rows_read']:>10}{r['rows_merged']:>9}"
                  f"{float(r['duration_s']):>9.2f}  {r['watermark']}")


def cmd_backfill(args) -> int:
    """Full reload through shadow tables, as the Dagster `backfill` job (recorded in the
    instance), with a progress bar per table."""
    config = load_config(isolate=True)   # another tenant's broken file is not ours
    show, close = _progress(args)
    add_listener(show)
    try:
        outcome = run_load(config, args.tenant, tables_arg(args), quiet=not args.verbose,
                           job_name=BACKFILL, debug=args.debug)
    finally:
        remove_listener(show)
        close()
    return _finish_load(
        args, outcome,
        f"{'table':<16}{'rows read':>10}{'shadow':>9}{'rows/s':>10}{'seconds':>9}  watermark",
        lambda r: f"{r['table']:<16}{r['rows_read']:>10}{r.get('customer_shadow_rows', '-'):>9}"
                  f"{float(r.get('rows_per_s', 0)):>10,.0f}{float(r['duration_s']):>9.2f}  "
                  f"{r['watermark']}")


def cmd_merge_warehouse(args) -> int:
    """The warehouse merge step now, as the Dagster `merge_warehouse` job (recorded in the
    instance): every tenant's pending slices, one MERGE per warehouse table, then checks."""
    config = load_config(isolate=True)
    if not warehouse_enabled(config):
        print("error: the warehouse is not enabled (tenants/warehouse.yaml): nothing to merge",
              file=sys.stderr)
        return EXIT_FAIL
    defs = build_definitions(config)
    with open_instance() as instance:
        result = defs.resolve_job_def(MERGE_JOB).execute_in_process(
            instance=instance, raise_on_error=False, tags=process_tags())
        [ev] = instance.fetch_materializations(MERGE_ASSET, limit=1).records or [None]
    md = ev.asset_materialization.metadata if ev is not None and result.success else {}
    if args.json:
        print(json.dumps({"ok": result.success, **{k: v.value for k, v in md.items()}},
                         default=str, indent=2))
    elif md:
        print(md["tables"].value)
    if result.success:
        return EXIT_OK
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    why = failure.step_failure_data.error.message.strip() if failure else "the run failed"
    print(f"error: {why}", file=sys.stderr)
    return EXIT_FAIL
