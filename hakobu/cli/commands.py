"""`hakobu status`, `hakobu verify`, `hakobu demo`, `hakobu up`, `hakobu down`."""

import json
from pathlib import Path

from tqdm import tqdm

from assets.keys import POOL
from hakobu import tonight
from hakobu.cli.common import EXIT_FAIL, EXIT_OK, tables_arg
from hakobu.config import load_config
from hakobu.demo import run_demo
from hakobu.launch import open_instance, preflight
from hakobu.localenv.up import down, up
from hakobu.status import collect
from hakobu.status import render as render_status
from hakobu.verify_run import render, verify_tenant
from resources.dagster import open_io, resources_from_env


def cmd_status(args) -> int:
    """Per tenant: last delivery, watermark lag, next run, predicted finish, deadline margin;
    per cluster, tonight's forecast (hakobu.tonight) — from the Dagster instance only (no
    source or BigQuery access)."""
    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tenants = [t.strip() for t in args.tenants.split(",")] if args.tenants else None
    for t in tenants or []:
        if t not in {b.tenant for b in config.broken}:
            config.tenant(t)
    wanted = [t for t in tenants if t in config.tenants] if tenants else None
    with open_instance() as instance:
        statuses = collect(config, instance, tenants=wanted) if wanted != [] else []
        clusters, limits = tonight.forecast(config, instance, tenants=wanted, pool=POOL) \
            if wanted != [] else ([], None)
    broken = [b for b in config.broken if not tenants or b.tenant in tenants]
    if args.json:
        print(json.dumps([{**s.as_dict(), **_tonight_of(s.tenant, clusters)} for s in statuses]
                         + [{"tenant": b.tenant, "file": b.file,
                             "left_out": [str(e) for e in b.errors]} for b in broken], indent=2))
    else:
        print(render_status(statuses, broken))
        if limits is not None:
            print()
            print(tonight.render(clusters, limits))
    return EXIT_OK


def _tonight_of(tenant: str, clusters) -> dict:
    """A tenant's `--json` keys for the night: `tonight` (its own run) and `cluster_tonight`
    (its cluster's forecast, every run of it) — added to the tenant's entry, so the output
    stays a list of tenants."""
    for c in clusters:
        for f in c.runs:
            if f.run.tenant == tenant and f.run.deadline is not None:
                return {"tonight": tonight.tenant_json(f),
                        "cluster_tonight": tonight.cluster_json(c)}
    return {}


def cmd_verify(args) -> int:
    """A full content comparison of one tenant's tables (customer dataset and warehouse slice),
    through the cluster's read governor; exit 0 when equal, 1 when different (after --repair:
    0 only if the repair made every table equal)."""
    config = load_config(isolate=True)   # another tenant's broken file is not ours
    tables = tables_arg(args)
    for t in tables or []:
        config.tenant(args.tenant).table(t)
    resources = resources_from_env()
    preflight(config, args.tenant, resources=resources)
    bars: dict = {}

    def show(p) -> None:
        if args.no_progress or args.json:
            return
        bar = bars.get(p.target)
        if bar is None:
            bar = bars[p.target] = tqdm(total=p.total, unit="slice", desc=p.target,
                                        leave=False, dynamic_ncols=True)
        bar.update(p.done - bar.n)

    try:
        with open_io(resources) as io:
            verdicts = verify_tenant(config, args.tenant, io=io, tables=tables,
                                     repair=args.repair, on_progress=show)
    finally:
        for bar in bars.values():
            bar.close()
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=2))
    else:
        print(render(verdicts))
    return EXIT_OK if all(v.equal and not v.error for v in verdicts) else EXIT_FAIL


def cmd_demo(args) -> int:
    return run_demo(keep_running=args.keep_running)


def cmd_up(args) -> int:
    return up(Path(args.state_dir) if args.state_dir else None, demo_data=not args.no_demo_data)


def cmd_down(args) -> int:
    return down(Path(args.state_dir) if args.state_dir else None)
