"""`make dev`: the Dagster UI on the demo's instance, with the demo's MySQL and the emulator.

Starts what the embedded default needs (as the demo does), runs `dagster dev -w workspace.yaml`
in the foreground, and stops the emulator (and a private MariaDB) when it exits.
"""

import os
import subprocess
import sys
from pathlib import Path

from hakobu.config import REPO_ROOT


def main(argv: list[str]) -> int:
    from hakobu.cli import ensure_dagster_home
    from hakobu.localenv.emulator import start_emulator
    from hakobu.localenv.mariadb import ensure_mysql

    local = REPO_ROOT / ".local"
    server = ensure_mysql(local / "mariadb")
    emu = start_emulator(local / "bqemulator")
    home = ensure_dagster_home()
    env = {**os.environ, "HAKOBU_MYSQL_HOST": server.host, "HAKOBU_MYSQL_PORT": str(server.port),
           "HAKOBU_MYSQL_USER": server.user, "HAKOBU_BIGQUERY_ENDPOINT": emu.url,
           "DAGSTER_HOME": str(home)}
    print(f"MySQL {server.host}:{server.port}, BigQuery emulator {emu.url}, DAGSTER_HOME={home}",
          flush=True)
    dagster = Path(sys.executable).with_name("dagster")
    try:
        return subprocess.call([str(dagster), "dev", "-w", "workspace.yaml", *argv],
                               cwd=REPO_ROOT, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        emu.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
