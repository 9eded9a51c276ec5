"""The production layout on one machine, for tests: a gRPC code server, one daemon and the
webserver on a PostgreSQL-backed instance (deploy/dagster.yaml, deploy/workspace.grpc.yaml).

Every process starts in its own session, so stopping its process group also stops what it started
(run workers are children of the code server). Processes get everything through their
environment; the test process's own environment is never changed.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent


def wait_for(what: str, check, timeout: float, interval: float = 0.5, on_timeout=None):
    """Poll check() until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path = REPO
    popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        with open(self.log, "ab") as out:
            out.write(f"\n=== start {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> bool:
        """Signal the whole process group (the leader may be gone while its children live)."""
        if self.popen is None:
            return False
        try:
            os.killpg(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None:
            return
        self.signal_group(signal.SIGTERM)
        self.wait_stopped(timeout)

    def wait_stopped(self, timeout: float = 15.0) -> None:
        """After SIGTERM: wait for the group to exit, SIGKILL it after timeout."""
        if self.popen is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None and not self.signal_group(0):
                return
            time.sleep(0.2)
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"({self.name}: no log)"
        return f"--- last lines of {self.log}:\n" + "\n".join(text[-lines:])


def instance_yaml() -> dict:
    """deploy/dagster.yaml with the test's short intervals; everything else as in production
    (the database comes from the environment, as there)."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    config["run_monitoring"]["poll_interval_seconds"] = 5
    # a run dequeued while a test has the code server down waits this long before the daemon
    # tries the location again (production: 30 s); still max_user_code_failure_retries (3)
    # tries, so a restart has 30 s to come back (it takes under 10 s here)
    config["run_coordinator"]["config"]["user_code_failure_retry_delay"] = 10
    return config


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    grpc_port: int
    web_port: int
    procs: list[Proc] = field(default_factory=list)
    grpc: Proc | None = None
    daemon: Proc | None = None
    webserver: Proc | None = None

    @property
    def workspace(self) -> Path:
        return DEPLOY / "workspace.grpc.yaml"

    def _proc(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.env, self.root / "logs" / f"{name}.log")
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        self.procs.append(proc)
        return proc.start()

    def code_server_argv(self, host: str = "127.0.0.1") -> list[str]:
        """The command of deploy/Dockerfile (a test holds the two equal), on our port."""
        return [str(BIN / "dagster"), "api", "grpc", "-m", "pipelines.definitions",
                "--location-name", "hakobu", "-h", host, "-p", str(self.grpc_port)]

    def start_code_server(self) -> Proc:
        self.grpc = self._proc("code_server", self.code_server_argv())
        return self.grpc

    def wait_code_server(self, timeout: float = 120) -> None:
        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=self.grpc_port, host="127.0.0.1")

        def ready():
            assert self.grpc is not None and self.grpc.alive(), self.grpc.tail()
            try:
                return client.ping("hakobu")
            except Exception:  # not listening yet
                return None

        wait_for("the gRPC code server", ready, timeout, on_timeout=self.grpc.tail)

    def start_daemon(self) -> Proc:
        self.daemon = self._proc("daemon", [str(BIN / "dagster-daemon"), "run",
                                            "-w", str(self.workspace)])
        return self.daemon

    def start_webserver(self) -> Proc:
        self.webserver = self._proc("webserver", [
            str(BIN / "dagster-webserver"), "-w", str(self.workspace),
            "-h", "127.0.0.1", "-p", str(self.web_port)])
        return self.webserver

    def wait_webserver(self, timeout: float = 120) -> None:
        def ready():
            assert self.webserver is not None and self.webserver.alive(), self.webserver.tail()
            try:
                with urllib.request.urlopen(f"{self.web_url}/server_info", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("the webserver", ready, timeout, on_timeout=self.webserver.tail)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.web_url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = json.loads(resp.read())
        if out.get("errors"):
            raise AssertionError(f"GraphQL errors: {out['errors']}")
        return out["data"]

    def logs(self) -> str:
        return "\n".join(p.tail(25) for p in self.procs)

    def stop_all(self) -> None:
        """SIGTERM every process group at once, then wait for each (each is given the same 15 s
        before SIGKILL as Proc.stop; they shut down side by side instead of one after another)."""
        for proc in reversed(self.procs):
            proc.signal_group(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.wait_stopped()
