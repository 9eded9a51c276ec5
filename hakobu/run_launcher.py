"""Dagster's DefaultRunLauncher, plus the run-worker health check run monitoring asks for.

With the default launcher a run worker is a subprocess of the gRPC code server. When the worker
alone dies, the code server notices and fails the run. When the code server dies with it (OOM,
a lost machine, a crash of the server) nobody does: DefaultRunLauncher cannot tell run
monitoring whether a worker lives, so the run stays STARTED until `max_runtime_seconds` (12 h)
and, by the queue's per-tenant limit, blocks every later run of its tenant.

This launcher answers run monitoring (`check_run_worker_health`, every `poll_interval_seconds`)
from evidence only:
- the run's worker process (run tags `hakobu/host`, `hakobu/pid`, `hakobu/pid_start`, written by
  the delivery step itself, hakobu.runs): when the daemon runs on that host, the pid tells —
  gone (or reused by another process) is FAILED;
- else the code server that launched it (Dagster's `.dagster/grpc_info` tag, and its server id,
  recorded at launch): the same server answering without the run among its current runs is
  FAILED;
- anything else (a new server since, another host, no tags yet) is RUNNING as far as anyone can
  tell, and `max_runtime_seconds` remains the backstop.
With `max_resume_run_attempts: 0` run monitoring then fails the run (Dagster rechecks that the
run has not just finished), `run_retries` may retry it, and the tenant's queue moves on.

Configure it in dagster.yaml as `run_launcher: {module: hakobu.run_launcher, class:
HakobuRunLauncher}`; container launchers (K8s, ECS) check their workers themselves.
"""

import json
import logging

from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from hakobu.runs import HOST_TAG, PID_TAG, worker_alive

log = logging.getLogger("hakobu.run_launcher")
SERVER_ID_TAG = "hakobu/code_server_id"


class HakobuRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring can check (see the module doc)."""

    def launch_run(self, context) -> None:
        super().launch_run(context)
        run = context.dagster_run
        try:
            client = self._client(self._instance.get_run_by_id(run.run_id).tags)
            if client is not None:
                self._instance.add_run_tags(run.run_id,
                                            {SERVER_ID_TAG: client.get_server_id(timeout=10)})
        except Exception as exc:   # noqa: BLE001 — only the fallback check is lost
            log.warning("run %s: code server id not recorded: %s", run.run_id, exc)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        tags = run.tags
        alive = worker_alive(tags)
        if alive is False:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run worker (pid {tags.get(PID_TAG)} on "
                                     f"{tags.get(HOST_TAG)}) is gone")
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "its worker process runs")
        return self._ask_code_server(run)

    def _ask_code_server(self, run) -> CheckRunHealthResult:
        from dagster._grpc.types import GetCurrentRunsResult
        from dagster._serdes import deserialize_value

        unknown = CheckRunHealthResult(WorkerStatus.RUNNING, "cannot tell: assumed running")
        recorded = run.tags.get(SERVER_ID_TAG)
        client = self._client(run.tags)
        if client is None or not recorded:
            return unknown
        try:
            if client.get_server_id(timeout=5) != recorded:
                return unknown              # another server now: it cannot know the run
            current = deserialize_value(client.get_current_runs(), GetCurrentRunsResult)
        except Exception:  # noqa: BLE001 — the server does not answer: cannot tell
            return unknown
        if run.run_id in current.current_runs:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "its code server runs it")
        return CheckRunHealthResult(WorkerStatus.FAILED,
                                    "the code server that launched it no longer runs it")

    @staticmethod
    def _client(tags):
        from dagster._grpc.client import DagsterGrpcClient

        info = tags.get(GRPC_INFO_TAG)
        if not info:
            return None
        grpc = json.loads(info)
        return DagsterGrpcClient(port=grpc.get("port"), socket=grpc.get("socket"),
                                 host=grpc.get("host"), use_ssl=bool(grpc.get("use_ssl")))
