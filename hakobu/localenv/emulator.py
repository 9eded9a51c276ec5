"""Start and stop the BigQuery emulator (PyPI bqemulator) with its offline fix.

bqemulator tries to download DuckDB's spatial extension at start and fails offline; the extension
ships on PyPI (duckdb-extension-spatial), so we INSTALL that file into the DuckDB extension dir of
the current user first.
"""

import glob
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hakobu.errors import HakobuError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_spatial_extension() -> None:
    import duckdb
    import duckdb_extension_spatial

    pattern = os.path.join(os.path.dirname(duckdb_extension_spatial.__file__), "extensions", "*",
                           "spatial.duckdb_extension")
    files = glob.glob(pattern)
    if not files:
        raise HakobuError("duckdb-extension-spatial ships no extension file",
                          hint="pip install duckdb==1.5.5 duckdb-extension-spatial==1.5.5")
    con = duckdb.connect()
    try:
        con.execute("INSTALL '" + files[0].replace("'", "''") + "'")
    finally:
        con.close()


@dataclass
class Emulator:
    url: str
    pid: int
    data_dir: Path
    log: Path

    def stop(self, timeout: float = 15.0) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            try:
                os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_emulator(data_dir: Path, port: int | None = None, project: str = "local",
                   timeout: float = 60.0) -> Emulator:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    install_spatial_extension()
    port = port or free_port()
    exe = Path(sys.executable).with_name("bqemulator")
    log = data_dir / "emulator.log"
    cmd = [str(exe), "start", "--rest-port", str(port), "--grpc-port", str(free_port()),
           "--persistent", "--data-dir", str(data_dir), "--project", project,
           "--log-level", "warning"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HakobuError(f"the BigQuery emulator exited with code {proc.returncode}",
                              hint=f"see {log}")
        try:
            with urllib.request.urlopen(f"{url}/bigquery/v2/projects/{project}/datasets",
                                        timeout=2):
                return Emulator(url=url, pid=proc.pid, data_dir=data_dir, log=log)
        except OSError:
            time.sleep(0.3)
    Emulator(url=url, pid=proc.pid, data_dir=data_dir, log=log).stop()
    raise HakobuError(f"the BigQuery emulator did not answer within {timeout:.0f}s",
                      hint=f"see {log}")
