"""`hakobu up` / `hakobu down` (`make up` / `make down`): the embedded default, kept running.

`hakobu demo` starts what it needs and stops it again; every other command needs a MySQL server
and BigQuery to talk to. `up` starts them and leaves them running in their own sessions:

- a MySQL-compatible server: the one on 127.0.0.1:3306 when it accepts root without a password
  (or HAKOBU_MYSQL_HOST/PORT/USER), else a private MariaDB under <state>/mariadb;
- the BigQuery emulator on a free port, its data under <state>/bqemulator (so loaded tables
  survive a `down` and an `up`);
- the demo tenants' source schemas, when they do not exist yet (`--no-demo-data`: not).

It writes what to export to <state>/env (`source .local/env`) and what it started to
<state>/up.json, for `down` and for `hakobu demo` / `make dev`, which use the running emulator
instead of starting a second one on the same data. Running `up` again reuses what still runs.

A throwaway HMAC key for the demo warehouse's hashed columns is generated once into
<state>/warehouse_hash_key and exported from the env file: the local stand-in for the secret a
deployment keeps in its secret manager.
"""

import json
import os
import secrets
import shlex
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hakobu.config import REPO_ROOT, load_config
from hakobu.localenv.demo_data import DEMO_SCHEMAS, connect, create_demo_data
from hakobu.localenv.emulator import Emulator, start_emulator
from hakobu.localenv.mariadb import MySQLServer, ensure_mysql

DEFAULT_STATE = REPO_ROOT / ".local"
STATE_FILE = "up.json"
ENV_FILE = "env"
HASH_KEY_FILE = "warehouse_hash_key"


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Running:
    """What `up` started, read back from up.json (only what still runs)."""

    state_dir: Path
    mysql_host: str
    mysql_port: int
    mysql_user: str
    mysql_private: bool
    mysql_pid: int | None
    emulator_url: str
    emulator_pid: int


def _alive(pid: int | None, needle: str) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ProcessLookupError, PermissionError):
        return False
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    return needle.encode() in cmdline


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/bigquery/v2/projects/local/datasets", timeout=3):
            return True
    except OSError:
        return False


def running(state_dir: Path | None = None) -> Running | None:
    """The environment an earlier `up` started, if its emulator still runs and answers."""
    state_dir = Path(state_dir or DEFAULT_STATE)
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    r = Running(state_dir=state_dir, **data)
    if not _alive(r.emulator_pid, "bqemulator") or not _answers(r.emulator_url):
        return None
    return r


def _hash_key(state_dir: Path) -> str:
    path = state_dir / HASH_KEY_FILE
    if not path.exists():
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def env_of(r: Running) -> dict[str, str]:
    """The variables every command (and `dagster dev`) needs to use this environment."""
    env = {"HAKOBU_MYSQL_HOST": r.mysql_host, "HAKOBU_MYSQL_PORT": str(r.mysql_port),
           "HAKOBU_MYSQL_USER": r.mysql_user, "HAKOBU_BIGQUERY_ENDPOINT": r.emulator_url,
           "HAKOBU_BIGQUERY_RETRY_DEADLINE": "30",
           "DAGSTER_HOME": str(r.state_dir / "dagster_home")}
    try:
        w = load_config().warehouse
    except Exception:           # noqa: BLE001 — a broken config: `hakobu validate` says why
        w = None
    if w is not None and w.enabled:
        env[w.hash_key_env] = _hash_key(r.state_dir)
    return env


def _write_env(r: Running, env: dict[str, str]) -> Path:
    path = r.state_dir / ENV_FILE
    bin_dir = Path(sys.executable).parent
    lines = [f"# written by `hakobu up` at {time.strftime('%Y-%m-%d %H:%M:%S')}: the embedded "
             "default (MySQL + BigQuery emulator).",
             "# `source` it in each shell that runs hakobu or dagster; `hakobu down` stops it.",
             *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
             f"export PATH={shlex.quote(str(bin_dir))}:\"$PATH\""]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def up(state_dir: Path | None = None, *, demo_data: bool = True) -> int:
    state_dir = Path(state_dir or DEFAULT_STATE).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    r = running(state_dir)
    server = ensure_mysql(state_dir / "mariadb")
    if r is None:
        emu = start_emulator(state_dir / "bqemulator")
        url, pid, how = emu.url, emu.pid, "started"
    else:
        url, pid, how = r.emulator_url, r.emulator_pid, "already running"
    r = Running(state_dir=state_dir, mysql_host=server.host, mysql_port=server.port,
                mysql_user=server.user, mysql_private=server.private, mysql_pid=server.pid,
                emulator_url=url, emulator_pid=pid)
    (state_dir / STATE_FILE).write_text(json.dumps(
        {k: v for k, v in r.__dict__.items() if k != "state_dir"}, indent=2) + "\n")
    env = env_of(r)
    (state_dir / "dagster_home").mkdir(exist_ok=True)
    path = _write_env(r, env)
    say(f"MySQL: {server.host}:{server.port} as {server.user} "
        f"({f'private MariaDB, pid {server.pid}' if server.private else 'the shared server'})")
    say(f"BigQuery emulator: {url} ({how}, pid {pid}, data in {state_dir / 'bqemulator'})")
    if demo_data:
        made = _demo_data(server)
        say("Demo source data: " + (f"created, {made} rows" if made else "present, kept"))
    say(f"\nEverything keeps running until `hakobu down` (`make down`). In each shell:\n\n"
        f"  source {_shown(path)}\n\nwhich exports:")
    for k, v in env.items():
        say(f"  {k}={'(a local throwaway key)' if k.endswith('_KEY') else v}")
    say("\nThen e.g.: hakobu load alpha; hakobu status; hakobu verify alpha; make dev")
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _demo_data(server) -> int:
    """The demo schemas, created when absent (an existing one is left as it is: it may hold
    what an earlier demo or load changed). Returns rows written."""
    conn = connect(server.host, server.port, server.user)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            have = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    missing = [s for s in DEMO_SCHEMAS if s.schema not in have]
    if not missing:
        return 0
    return sum(create_demo_data(server.host, server.port, server.user,
                                schemas=missing).values())


def down(state_dir: Path | None = None) -> int:
    state_dir = Path(state_dir or DEFAULT_STATE).resolve()
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        say(f"nothing to stop: no {state_dir / STATE_FILE} (was `hakobu up` run here?)")
        return 0
    if _alive(data.get("emulator_pid"), "bqemulator"):
        Emulator(url=data["emulator_url"], pid=data["emulator_pid"],
                 data_dir=state_dir / "bqemulator", log=state_dir / "bqemulator" /
                 "emulator.log").stop()
        say(f"stopped the BigQuery emulator (pid {data['emulator_pid']})")
    if data.get("mysql_private") and data.get("mysql_pid"):
        MySQLServer(host=data["mysql_host"], port=data["mysql_port"], user="root",
                    private=True, pid=data["mysql_pid"], socket=None,
                    datadir=state_dir / "mariadb" / "data").stop()
        say(f"stopped the private MariaDB (pid {data['mysql_pid']})")
    for name in (STATE_FILE, ENV_FILE):
        (state_dir / name).unlink(missing_ok=True)
    say("the embedded default is down (data kept under "
        f"{state_dir}; `hakobu up` starts it again)")
    return 0
