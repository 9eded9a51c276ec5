"""Runs whose process is gone: told apart by the process each hakobu run records, marked failed,
their pool claims freed.

Dagster does not notice a run whose process died without a word (SIGKILL, the OOM killer, a
lost machine): the CLI executes runs in its own process (`execute_in_process`), where nothing
else watches them, so such a run stays STARTED and keeps its `hakobu_mysql` pool slot. After a
few, the next run waits for a slot forever (DESIGN.md §9). So every run records the process
that executes it — run tags `hakobu/host`, `hakobu/pid` and `hakobu/pid_start` (the process's
start time, so a recycled pid is not taken for the same process) — and `reap` fails the runs
whose process is gone on this host and frees what they held. The CLI reaps at the start of
every command that runs Dagster; in production the run monitoring daemon asks the same question
through hakobu.run_launcher.

A run is only ever failed on evidence: on another host, or without the tags, it is left alone.
"""

import logging
import os
import socket
from dataclasses import dataclass

log = logging.getLogger("hakobu.runs")

HOST_TAG = "hakobu/host"
PID_TAG = "hakobu/pid"
PID_START_TAG = "hakobu/pid_start"


def host() -> str:
    return socket.gethostname()


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None
    where there is no procfs."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    try:
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[19] if fields[0] != "Z" else "zombie"
    except (ValueError, IndexError):
        return None


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that name the process executing a run (this one by default)."""
    pid = pid or os.getpid()
    tags = {HOST_TAG: host(), PID_TAG: str(pid)}
    start = _start_ticks(pid)
    if start:
        tags[PID_START_TAG] = start
    return tags


def worker_alive(tags) -> bool | None:
    """True while the process a run's tags name still runs, False once it is gone (or the pid
    is another process now), None when this host cannot tell (another host, no tags)."""
    if tags.get(HOST_TAG) != host() or not str(tags.get(PID_TAG, "")).isdigit():
        return None
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                               # someone else's process: it exists
    start = _start_ticks(pid)
    if start == "zombie":
        return False
    recorded = tags.get(PID_START_TAG)
    if recorded and start and start != recorded:
        return False                       # the pid was given to another process since
    return True


def record_worker(instance, run) -> None:
    """Tag a run with the process executing it, when another process created the run (a run
    worker launched by the daemon or the UI). The CLI's runs carry the tags from the start."""
    tags = process_tags()
    if all(run.tags.get(k) == v for k, v in tags.items()):
        return
    instance.add_run_tags(run.run_id, tags)


@dataclass(frozen=True)
class Reaped:
    run_id: str
    job: str
    tenant: str | None
    status: str                            # what the run was left in
    why: str


ACTIVE = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def dead_worker_message(run, tags=None) -> str:
    t = tags or run.tags
    return (f"the process executing this run (pid {t.get(PID_TAG)} on {t.get(HOST_TAG)}) is gone: "
            "killed (SIGKILL, out of memory) or its machine lost. Marked failed and its pool "
            "claims freed by hakobu; rerun the tenant: every unit of work is idempotent, a rerun "
            "resumes at the last watermark")


def reap(instance) -> list[Reaped]:
    """Fail every unfinished run whose process is gone on this host, free its pool claims, and
    free claims still held by runs that have ended (or no longer exist). Returns the runs
    failed. Safe to call from several processes at once: a run already finished is skipped."""
    import dagster as dg

    statuses = [getattr(dg.DagsterRunStatus, s) for s in ACTIVE]
    out = []
    for run in instance.get_runs(dg.RunsFilter(statuses=statuses)):
        if worker_alive(_worker_tags(instance, run)) is not False:
            continue
        fresh = instance.get_run_by_id(run.run_id)
        if fresh is None or fresh.is_finished:
            continue
        why = dead_worker_message(fresh, _worker_tags(instance, fresh))
        if fresh.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(fresh, why)
        else:
            instance.report_run_failed(fresh, why)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        out.append(Reaped(run.run_id, run.job_name, run.tags.get("hakobu/tenant"),
                          fresh.status.value, why))
        log.warning("run %s: %s", run.run_id, why)
    free_ended_claims(instance)
    return out


def _worker_tags(instance, run) -> dict:
    """The run's process tags; for a run without them (executed in process by a hakobu from
    before they existed, or by anything else) in a SQLite instance, the pid Dagster's in-process
    executor logged ("Executing steps in process (pid: N)"). SQLite storage is one machine's:
    its locking does not work across hosts, so that pid is a pid of this host."""
    if PID_TAG in run.tags:
        return run.tags
    from dagster._core.storage.runs import SqliteRunStorage

    if not isinstance(instance.run_storage, SqliteRunStorage):
        return run.tags
    import dagster as dg

    for record in reversed(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        event = record.dagster_event
        data = event.event_specific_data if event else None
        pid = getattr(data, "metadata", {}).get("pid") if data else None
        text = getattr(pid, "value", pid)
        if text is not None and str(text).isdigit():
            return {**run.tags, HOST_TAG: host(), PID_TAG: str(text)}
    return run.tags


def free_ended_claims(instance) -> list[str]:
    """Pool claims of runs that have ended: the daemon frees them after a while
    (`free_slots_after_run_end_seconds`); the CLI has no daemon."""
    storage = instance.event_log_storage
    if not getattr(storage, "supports_global_concurrency_limits", False):
        return []
    freed = []
    for run_id in storage.get_concurrency_run_ids():
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


def release(instance, run_id: str, message: str, *, canceled: bool = True) -> None:
    """End a run this process is abandoning (a stop that did not finish in time): mark it
    canceled (or failed) unless it has ended already, and free its pool claims."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        if canceled:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
