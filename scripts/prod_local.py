"""The production layout of deploy/ on this machine, to try it: a PostgreSQL-backed instance, a gRPC
code server, one daemon and the webserver on 127.0.0.1, with the demo's MySQL and the BigQuery
emulator (as `make dev`). Ctrl-C stops everything it started.

    .venv/bin/python scripts/prod_local.py [--port 3000]

PostgreSQL: DAGSTER_PG_HOST/PORT/USERNAME (default 127.0.0.1:5432, postgres, trust auth; a
password only as DAGSTER_PG_PASSWORD) and database DAGSTER_PG_DB (default hakobu_prod_local,
created if missing). DAGSTER_HOME: .local/prod_home with deploy/dagster.yaml.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def ensure_database(env: dict) -> None:
    import psycopg2

    conn = psycopg2.connect(host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"],
                            user=env["DAGSTER_PG_USERNAME"], password=env["DAGSTER_PG_PASSWORD"],
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (env["DAGSTER_PG_DB"],))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{env["DAGSTER_PG_DB"]}"')
    conn.close()


def stop(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """TERM each process group (run workers are children of the code server), then KILL."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> int:
    sys.path.insert(0, str(REPO))
    from hakobu.localenv.emulator import free_port, start_emulator
    from hakobu.localenv.mariadb import ensure_mysql

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--port", type=int, default=3000, help="webserver port")
    port = args.parse_args().port

    local = REPO / ".local"
    home = Path(os.environ.get("DAGSTER_HOME") or local / "prod_home")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    server = ensure_mysql(local / "mariadb")
    emu = start_emulator(local / "bqemulator")
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "DAGSTER_PG_HOST": os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
           "DAGSTER_PG_PORT": os.environ.get("DAGSTER_PG_PORT", "5432"),
           "DAGSTER_PG_USERNAME": os.environ.get("DAGSTER_PG_USERNAME", "postgres"),
           "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", ""),
           "DAGSTER_PG_DB": os.environ.get("DAGSTER_PG_DB", "hakobu_prod_local"),
           "HAKOBU_CODE_SERVER_HOST": "127.0.0.1", "HAKOBU_CODE_SERVER_PORT": str(free_port()),
           "HAKOBU_MYSQL_HOST": server.host, "HAKOBU_MYSQL_PORT": str(server.port),
           "HAKOBU_MYSQL_USER": server.user, "HAKOBU_BIGQUERY_ENDPOINT": emu.url}
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        procs.append(subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=REPO, env=env,
                                      start_new_session=True))
        return procs[-1]

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):   # also when started without a terminal
        signal.signal(sig, interrupted)
    workspace = str(REPO / "deploy" / "workspace.grpc.yaml")
    try:
        ensure_database(env)
        grpc_port = env["HAKOBU_CODE_SERVER_PORT"]
        code = start("dagster", "api", "grpc", "-m", "pipelines.definitions", "--location-name",
                     "hakobu", "-h", "127.0.0.1", "-p", grpc_port)
        while subprocess.call([str(BIN / "dagster"), "api", "grpc-health-check", "-p", grpc_port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) != 0:
            if code.poll() is not None:
                return 1
            time.sleep(1)
        start("dagster-daemon", "run", "-w", workspace)
        start("dagster-webserver", "-w", workspace, "-h", "127.0.0.1", "-p", str(port))
        print(f"prod_local: UI on http://127.0.0.1:{port} (DAGSTER_HOME={home}, database "
              f"{env['DAGSTER_PG_DB']}, MySQL {server.host}:{server.port}, emulator {emu.url})",
              flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(procs)
        emu.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
