"""Run a tenant's delivery as a Dagster run inside this process (`hakobu load`, `hakobu
backfill`, `hakobu demo`): the instance at DAGSTER_HOME, the preflight, the run itself.

An app-layer module shared by hakobu.cli and hakobu.demo (neither imports the other). The run
executes the code location's own Definitions (pipelines.build), with its resources, so a command
and a scheduled run talk to MySQL and BigQuery through the same `io` resource; the preflight
builds its IO the same way (resources.dagster.open_io).

The run is tagged with this process (hakobu.runs) so that, should it die, the next command fails
it and frees its pool claim; SIGTERM or Ctrl-C stop it within seconds (hakobu.stop), marked
canceled.
"""

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.utils import make_new_run_id

from hakobu import stop
from hakobu.config import REPO_ROOT, Config
from hakobu.runs import process_tags, reap, release
from pipelines.build import NIGHTLY, build_definitions, job_run_config, run_tags, selection_for
from resources import rust_panics
from resources.dagster import open_io, open_resource, resources_from_env

DAGSTER_YAML = ("telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
                "concurrency:\n  pools:\n    default_limit: 4\n"
                "freshness:\n  enabled: true\n")   # assets/freshness.py's policies evaluated


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to a persistent project-local instance with telemetry off."""
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".local" / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def open_instance() -> dg.DagsterInstance:
    """The Dagster instance at DAGSTER_HOME, after failing the runs whose process is gone and
    freeing their pool claims (hakobu.runs): every command that runs Dagster starts here, so a
    load killed earlier never blocks this one."""
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    try:
        reaped = reap(instance)
    except Exception:
        instance.dispose()
        raise
    if reaped:
        ids = ", ".join(r.run_id[:8] for r in reaped)
        many = len(reaped) != 1
        print(f"hakobu: marked {len(reaped)} crashed run{'s' if many else ''} failed "
              f"({'their processes are' if many else 'its process is'} gone) and freed "
              f"{'their' if many else 'its'} pool claims: {ids}", file=sys.stderr, flush=True)
    return instance


@dataclass
class LoadOutcome:
    """What a load or backfill run did: per-table metadata of the delivered customer tables,
    and for a failed run one line saying why (plus the full error, for --debug)."""

    ok: bool
    run_id: str
    status: str
    rows: list[dict] = field(default_factory=list)
    error: str | None = None
    details: list[str] = field(default_factory=list)

    def as_dict(self, tenant: str) -> dict:
        return {"tenant": tenant, "ok": self.ok, "run_id": self.run_id, "status": self.status,
                "error": self.error, "tables": [
                    {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                     for k, v in r.items()} for r in self.rows]}


def preflight(config: Config, tenant_id: str, *, resources: dict | None = None,
              source: bool = True) -> None:
    """Before a run: the source answers and takes our login, BigQuery (or the emulator) answers
    with credentials, the tenant's dataset is where its file says. Each failure is one line
    saying what to do, and no Dagster run is created for it."""
    resources = resources or resources_from_env()
    tenant = config.tenant(tenant_id)
    with open_resource(resources["bigquery"]) as bq:
        bq.check()
    with open_io(resources) as io:
        if source:
            io.source(config.cluster_of(tenant)).ping()
        io.customer(tenant).check_dataset()


def run_load(config: Config, tenant_id: str, tables: list[str] | None = None, *,
             quiet: bool = True, job_name: str | None = None, debug: bool = False,
             check: bool = True, resources: dict | None = None) -> LoadOutcome:
    """Materialize one tenant's customer tables (and, read once, their warehouse twins when the
    warehouse is enabled) through the Dagster `nightly` job, or the named job (`backfill`)."""
    tenant = config.tenant(tenant_id)
    names = tables or [t.name for t in tenant.tables]
    for n in names:
        tenant.table(n)
    resources = resources or resources_from_env()
    if check:
        preflight(config, tenant_id, resources=resources)
    instance = open_instance()
    defs = build_definitions(config, resources=resources)
    job = defs.resolve_job_def(job_name or NIGHTLY)
    level = "DEBUG" if debug else "INFO" if not quiet else "CRITICAL"
    run_config = {"loggers": {"console": {"config": {"log_level": level}}},
                  # by hand, a nightly run merges its warehouse slices at its end (a backfill
                  # swaps its slices in directly: nothing to merge)
                  **job_run_config(job.name, merge_warehouse=job.name == NIGHTLY)}
    run_id = make_new_run_id()
    marked = threading.Event()
    with instance, stop.on_signals(on_signal=_canceling(run_id, marked),
                                   on_abandon=_abandon(run_id)):
        result = job.execute_in_process(
            instance=instance, partition_key=tenant_id, raise_on_error=False,
            asset_selection=selection_for(config, names), run_config=run_config,
            run_id=run_id, tags={**run_tags(config, tenant_id), **process_tags()})
        return _outcome(instance, result, run_id, marked)


def _canceling(run_id: str, marked: threading.Event):
    def canceling(signum: int) -> bool:
        """At the signal: the run is CANCELING, so Dagster ends it CANCELED, not FAILURE.
        True (leave now) while its step has not started: e.g. waiting for a pool slot, where
        Dagster would not raise the interrupt at all, and nothing is read or written yet."""
        try:
            with dg.DagsterInstance.get() as inst:
                run = inst.get_run_by_id(run_id)
                if run is None or run.is_finished:
                    return False
                inst.report_run_canceling(run, f"stop asked for ({stop.reason()})")
                return not inst.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        finally:
            marked.set()

    return canceling


def _abandon(run_id: str):
    def abandon(code: int) -> None:
        """The stop did not finish in time: end the run here, free its claims."""
        rust_panics.shutdown()
        with dg.DagsterInstance.get() as inst:
            release(inst, run_id, f"stopped ({stop.reason()}) and abandoned after the grace "
                                  "period; rerun to complete it")
        print(f"error: stopped ({stop.reason()}): the run {run_id[:8]} is marked canceled and "
              f"its pool claims are freed — rerun the command to complete it (it resumes at "
              "the last watermark)", file=sys.stderr, flush=True)

    return abandon


def _outcome(instance, result, run_id: str, marked: threading.Event) -> LoadOutcome:
    rows = []
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        if mat.asset_key.path[0] != "customer":
            continue
        md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()
              if k != "dagster/column_schema"}      # the schema is the UI's, not a figure
        rows.append({"table": mat.asset_key.path[-1], **md})
    if stop.requested():
        # the interrupt may have ended the run before `canceling` marked it: end it as
        # canceled either way, its claims freed
        marked.wait(5.0)
        release(instance, run_id, f"stopped ({stop.reason()})")
    run = instance.get_run_by_id(run_id)
    status = run.status.value if run is not None else "UNKNOWN"
    if result.success:
        return LoadOutcome(True, run_id, status, rows)
    error, details = run_error(result)
    if stop.requested():
        marked_as = {"CANCELED": "canceled", "FAILURE": "failed"}.get(status, status.lower())
        error = (f"stopped ({stop.reason()}): the run {run_id[:8]} is marked {marked_as} "
                 "and its pool claims are freed — rerun the command to complete it (it "
                 "resumes at the last watermark)")
    return LoadOutcome(False, run_id, status, rows, error, details)


def run_error(result) -> tuple[str, list[str]]:
    """One line for a failed run — the step's own failure description (hakobu's errors say
    what to do) — and the full errors, with their stack traces, for --debug."""
    lines, details = [], []
    for e in result.all_events:
        if e.event_type_value not in ("STEP_FAILURE", "RUN_FAILURE"):
            continue
        data = e.event_specific_data
        err = getattr(data, "error", None)
        if err is not None:
            details.append(err.to_string())
        if e.event_type_value != "STEP_FAILURE":
            continue
        failure = getattr(data, "user_failure_data", None)
        text = failure.description if failure is not None and failure.description else None
        if text is None and err is not None:
            inner = err
            while inner.cause is not None:
                inner = inner.cause
            text = inner.message.strip()
        lines.append((text or "the step failed").strip().splitlines()[0])
    return "; ".join(lines) or "the run failed", details


__all__ = ["LoadOutcome", "ensure_dagster_home", "open_instance",
           "preflight", "run_load", "run_error"]
