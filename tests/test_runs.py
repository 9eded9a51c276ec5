"""Telling a run's worker process alive from gone (hakobu.runs, hakobu.run_launcher): only ever
on evidence — another host, missing tags or a code server that cannot be asked mean "running"."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from dagster._core.launcher import WorkerStatus

from hakobu.run_launcher import HakobuRunLauncher
from hakobu.runs import HOST_TAG, PID_START_TAG, PID_TAG, host, process_tags, worker_alive


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_worker_alive_only_on_evidence():
    mine = process_tags()
    assert mine[HOST_TAG] == host() and mine[PID_TAG] == str(os.getpid())
    assert worker_alive(mine) is True
    assert worker_alive({**mine, PID_TAG: str(dead_pid())}) is False
    # the pid was given to another process since: its start time differs
    assert worker_alive({**mine, PID_START_TAG: "1"}) is False
    assert worker_alive({**mine, HOST_TAG: "another-machine"}) is None
    assert worker_alive({}) is None and worker_alive({HOST_TAG: host()}) is None


def test_the_launcher_reports_a_dead_worker_failed_and_cannot_tell_as_running():
    launcher = HakobuRunLauncher()

    def run(tags):
        return SimpleNamespace(run_id="r1", tags=tags)

    alive = launcher.check_run_worker_health(run(process_tags()))
    assert alive.status == WorkerStatus.RUNNING
    gone = launcher.check_run_worker_health(run({**process_tags(), PID_TAG: str(dead_pid())}))
    assert gone.status == WorkerStatus.FAILED and "is gone" in gone.msg
    elsewhere = launcher.check_run_worker_health(run({HOST_TAG: "another-machine",
                                                      PID_TAG: "4242"}))
    assert elsewhere.status == WorkerStatus.RUNNING       # no code server tag: cannot tell


CHILD = """
import os, signal, sys
import dagster as dg

@dg.op(pool="hakobu_mysql")
def die():
    os.kill(os.getpid(), signal.SIGKILL)     # mid-step, its pool slot claimed

@dg.job
def doomed():
    die()

with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    doomed.execute_in_process(instance=instance, tags=eval(sys.argv[2]))
"""


def test_reap_fails_runs_whose_process_died_and_frees_their_claims(tmp_path):
    """A process SIGKILLed mid-step leaves its run STARTED with its pool slot: reap fails it
    and frees the slot — with hakobu's process tags, and without them from the pid Dagster's
    in-process executor logged (runs of a hakobu from before the tags, in a SQLite instance)."""
    import dagster as dg

    from hakobu.runs import reap

    home = tmp_path / "dh"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n"
                                       "    default_limit: 2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for tags in ("{}", "__import__('hakobu.runs').runs.process_tags()"):
        subprocess.run([sys.executable, "-c", CHILD, str(home), tags], env=env, timeout=60,
                       capture_output=True)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        stuck = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
        assert len(stuck) == 2 and sum(PID_TAG in r.tags for r in stuck) == 1
        assert instance.event_log_storage.get_concurrency_run_ids() == {r.run_id for r in stuck}
        reaped = reap(instance)
        assert {r.run_id for r in reaped} == {r.run_id for r in stuck}
        assert all(instance.get_run_by_id(r.run_id).status == dg.DagsterRunStatus.FAILURE
                   for r in stuck)
        assert instance.event_log_storage.get_concurrency_run_ids() == set()
        assert reap(instance) == []                       # nothing left to do
