"""Telling a run's worker process alive from gone (hakobu.runs, hakobu.run_launcher): only ever
on evidence — another host, missing tags or a code server that cannot be asked mean "running"."""

import os
import subprocess
import sys
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
