"""`hakobu up` keeps the embedded default running and writes what to source; from a shell that
sourced it every command works; `hakobu down` stops it (issue #12, point 3).

The shell is a real `bash -c 'source .../env; hakobu ...'`, as the README's quick start has it;
the tenant's cluster names its endpoint only through ${HAKOBU_MYSQL_HOST/PORT/USER}, so nothing
works without the env file.
"""

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import tenant_body, unique
from tests.integration.conftest import make_orders

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/bigquery/v2/projects/local/datasets", timeout=3):
            return True
    except OSError:
        return False


def _shell_env() -> dict:
    """A newcomer's shell: none of hakobu's variables, this worktree's code first."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAKOBU_", "DAGSTER_", "GOOGLE_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def hakobu(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hakobu.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def sql(mysql_server):
    from tests.helpers import Sql

    s = Sql(mysql_server)
    yield s
    s.close()


def test_up_keeps_the_embedded_default_running_and_every_command_works(
        tmp_path, mysql_server, sql):
    state = tmp_path / "local"
    schema, dataset = unique("hk_ops"), unique("hk_ops")
    sql(f"CREATE DATABASE `{schema}` CHARACTER SET utf8mb4")
    cfg = tmp_path / "cfg"
    (cfg / "tenants").mkdir(parents=True)
    (cfg / "tenants" / "clusters.yaml").write_text(textwrap.dedent("""\
        clusters:
          main:
            host: ${HAKOBU_MYSQL_HOST}
            port: ${HAKOBU_MYSQL_PORT}
            user: ${HAKOBU_MYSQL_USER}
            timezone: UTC
            lag_seconds: 0
        """))
    (cfg / "tenants" / "a.yaml").write_text(
        "tenant: a\ncluster: main\n"
        + tenant_body(schema, dataset, "- name: orders\n  cursor: updated_at\n"))
    (cfg / "permissions.csv").write_text(f"dataset,role,member\nhakobu-test.{dataset},READER,"
                                         "user:ana@example.com\n")
    env = _shell_env()
    up = None
    try:
        make_orders(sql, schema, n=300)
        up = hakobu("up", "--state-dir", str(state), "--no-demo-data", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"source {state / 'env'}" in up.stdout and "hakobu down" in up.stdout
        st = json.loads((state / "up.json").read_text())
        # `up` has exited; what it started keeps running
        assert _alive(st["emulator_pid"]) and _answers(st["emulator_url"])
        envfile = (state / "env").read_text()
        for var in ("HAKOBU_MYSQL_HOST", "HAKOBU_MYSQL_PORT", "HAKOBU_MYSQL_USER",
                    "HAKOBU_BIGQUERY_ENDPOINT", "DAGSTER_HOME", "PATH",
                    "HAKOBU_WAREHOUSE_HASH_KEY"):        # the repo's demo warehouse hashes
            assert f"export {var}=" in envfile, var
        assert f"HAKOBU_BIGQUERY_ENDPOINT={st['emulator_url']}" in envfile

        # again: the same emulator, reused
        again = hakobu("up", "--state-dir", str(state), "--no-demo-data", env=env)
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout
        assert json.loads((state / "up.json").read_text())["emulator_url"] == st["emulator_url"]

        script = textwrap.dedent(f"""\
            set -e
            source {state / 'env'}
            export HAKOBU_CONFIG_DIR={cfg}
            hakobu validate
            hakobu load a
            hakobu status --tenants a
            hakobu verify a --no-progress
            hakobu backfill a --no-progress
            set +e; hakobu grants plan; echo "grants plan exit $?"; set -e
            hakobu grants apply
            """)
        shell = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=300)
        out = shell.stdout
        assert shell.returncode == 0, out + shell.stderr
        assert "OK: 1 tenants, 1 tables" in out
        assert "orders" in out and "300" in out
        assert "grants plan exit 0" in out
        assert "Traceback" not in shell.stderr, shell.stderr
        # the instance is the one the env file names
        assert (state / "dagster_home" / "dagster.yaml").exists()

        # without the env file's BigQuery endpoint: real BigQuery, no credentials — one line
        bare = hakobu("load", "a", env={
            **env, "HAKOBU_CONFIG_DIR": str(cfg), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
            "HAKOBU_MYSQL_HOST": st["mysql_host"], "HAKOBU_MYSQL_PORT": str(st["mysql_port"]),
            "HAKOBU_MYSQL_USER": st["mysql_user"], "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9"})
        assert bare.returncode == 1
        [line] = [x for x in bare.stderr.splitlines() if x.startswith("error:")]
        assert "make up" in line and "source .local/env" in line, bare.stderr
    finally:
        down = hakobu("down", "--state-dir", str(state), env=env)
        sql(f"DROP DATABASE IF EXISTS `{schema}`")     # the dataset goes with the emulator
    assert down.returncode == 0, down.stdout + down.stderr
    if up is not None and up.returncode == 0:
        assert "stopped the BigQuery emulator" in down.stdout
        assert not _alive(st["emulator_pid"]) and not _answers(st["emulator_url"])
        assert not (state / "env").exists()
