"""`make dev`: the Dagster UI on the demo's instance, with the demo's MySQL and the emulator.

Uses what `hakobu up` keeps running, or starts what the embedded default needs (as the demo
does) and stops it when `dagster dev -w workspace.yaml` (in the foreground) exits.
"""

import os
import subprocess
import sys
from pathlib import Path

from hakobu.config import REPO_ROOT
from hakobu.launch import ensure_dagster_home, open_instance
from hakobu.localenv.emulator import start_emulator
from hakobu.localenv.mariadb import ensure_mysql
from hakobu.localenv.up import env_of, running


def main(argv: list[str]) -> int:
    local = REPO_ROOT / ".local"
    kept = running(local)            # `hakobu up` runs: use it, and leave it running
    server = ensure_mysql(local / "mariadb")
    emu = None if kept else start_emulator(local / "bqemulator")
    url = kept.emulator_url if kept else emu.url
    home = ensure_dagster_home()
    env = {**os.environ, "HAKOBU_MYSQL_HOST": server.host, "HAKOBU_MYSQL_PORT": str(server.port),
           "HAKOBU_MYSQL_USER": server.user, "HAKOBU_BIGQUERY_ENDPOINT": url,
           "DAGSTER_HOME": str(home), **(env_of(kept) if kept else {})}
    with open_instance():            # runs a killed load left STARTED: failed, claims freed
        pass
    print(f"MySQL {server.host}:{server.port}, BigQuery emulator {url}"
          f"{' (hakobu up)' if kept else ''}, DAGSTER_HOME={home}", flush=True)
    dagster = Path(sys.executable).with_name("dagster")
    try:
        return subprocess.call([str(dagster), "dev", "-w", "workspace.yaml", *argv],
                               cwd=REPO_ROOT, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        if not kept:
            emu.stop()
            server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
