"""Find a MySQL-compatible server to work against, or start a private MariaDB.

`ensure_mysql` first tries a shared server (127.0.0.1:3306 as root with an empty password, or
whatever HAKOBU_MYSQL_HOST / HAKOBU_MYSQL_PORT / HAKOBU_MYSQL_USER say). When nobody answers
there it starts a private `mariadbd` whose datadir, socket, pid file, port file and log live in `state_dir`:

    state_dir/data/          datadir (initialised with mariadb-install-db on first use)
    state_dir/port           TCP port of the last start (reused when still free)
    state_dir/mariadbd.pid   written by mariadbd itself, removed on clean shutdown
    state_dir/mariadbd.sock  unix socket (a short path under /tmp if this one would be too long)
    state_dir/mariadb.log    server log, appended across starts
    state_dir/tmp/           its tmpdir (a starting mariadbd deletes every #sql* file in its
                             tmpdir: in /tmp, another server's bootstrap files)

The private server runs in its own session, so it outlives the process that started it (a later
`ensure_mysql` with the same state_dir reuses it) until `MySQLServer.stop()` is called. It binds
127.0.0.1 only and lets root in with an empty password over TCP: it is a throwaway local server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pymysql

from hakobu.errors import HakobuError
from hakobu.localenv.emulator import free_port
from hakobu.localenv.processes import (is_our_mariadbd, locked, log_tail, port_free,
                                       read_int, wait_gone)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3306
DEFAULT_USER = "root"

# Server settings of the private instance: small (2-core dev boxes), utf8mb4 like the shared one.
SERVER_OPTIONS = ("--bind-address=127.0.0.1", "--skip-name-resolve",
                  "--innodb-buffer-pool-size=64M", "--character-set-server=utf8mb4",
                  "--collation-server=utf8mb4_general_ci")

# `binlog=True` (change data capture, issue #15): what the binlog reader needs and
# hakobu/binlog_health.py demands. ROW + FULL image: whole before/after rows; FULL metadata
# (MariaDB 10.5+): column names, signedness, charsets, ENUM/SET values in each table-map event,
# so no INFORMATION_SCHEMA lookup and no relabelling by a later ALTER. Retention 2 days (=
# expire_logs_days=2): a small disk on dev boxes, no file expires in a test session, and it
# passes the guard's 24 h headroom.
BINLOG_SERVER_ID = 1
BINLOG_BASENAME = "hakobu-bin"          # files datadir/hakobu-bin.000001, ...
BINLOG_RETENTION_S = 2 * 24 * 3600
BINLOG_OPTIONS = (f"--log-bin={BINLOG_BASENAME}", f"--server-id={BINLOG_SERVER_ID}",
                  "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
                  f"--binlog-expire-logs-seconds={BINLOG_RETENTION_S}")

_SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/libexec")
_INSTALL_HINT = ("install MariaDB (Debian/Ubuntu: `sudo apt-get install mariadb-server`; macOS: "
                 "`brew install mariadb`), or point HAKOBU_MYSQL_HOST / HAKOBU_MYSQL_PORT "
                 "(and HAKOBU_MYSQL_USER) at a running MySQL/MariaDB server that accepts that user "
                 "with an empty password")
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS

# mariadbd processes started by this Python process, so stop() can reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass
class MySQLServer:
    host: str
    port: int
    user: str  # password is always empty for the local servers
    private: bool  # True when we started it ourselves
    pid: int | None
    socket: str | None
    datadir: Path | None = field(default=None, repr=False)
    log: Path | None = field(default=None, repr=False)

    def url(self, database: str | None = None) -> str:
        """SQLAlchemy URL, e.g. ``mysql+pymysql://root@127.0.0.1:3306/db?charset=utf8mb4``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        db = quote(database, safe="") if database else ""
        user = quote(self.user, safe="")
        return f"mysql+pymysql://{user}@{host}:{self.port}/{db}?charset=utf8mb4"

    def connect(self, database: str | None = None, **kwargs) -> pymysql.connections.Connection:
        """A plain pymysql connection (utf8mb4) to this server."""
        kwargs.setdefault("connect_timeout", 5)
        return pymysql.connect(host=self.host, port=self.port, user=self.user, password="",
                               database=database, charset="utf8mb4", **kwargs)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop a private server and wait until its process is gone. No-op for a shared server."""
        if not self.private or self.pid is None:
            return
        pid = self.pid
        proc = _CHILDREN.get(pid)
        if proc is not None:  # our own child: terminate and reap it
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            _CHILDREN.pop(pid, None)
            return
        # Started by another process (it may have exited since): only signal it if that pid still
        # is our mariadbd, so a recycled pid is never killed.
        if not is_our_mariadbd(pid, self.datadir):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if wait_gone(pid, timeout):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10.0)


def ensure_mysql(state_dir: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 user: str = DEFAULT_USER, timeout: float = 60.0) -> MySQLServer:
    """A server that accepts `user` with an empty password: the shared one, or a private one."""
    host = os.environ.get("HAKOBU_MYSQL_HOST") or host
    user = os.environ.get("HAKOBU_MYSQL_USER") or user
    env_port = os.environ.get("HAKOBU_MYSQL_PORT")
    if env_port:
        try:
            port = int(env_port)
        except ValueError:
            raise HakobuError(f"HAKOBU_MYSQL_PORT={env_port!r} is not a port number",
                              hint="set it to the server's TCP port, e.g. 3306") from None
    if _can_login(host, port, user):
        return MySQLServer(host=host, port=port, user=user, private=False, pid=None, socket=None)

    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with locked(state_dir / ".lock"):
        server = _running_private(state_dir, timeout)
        if server is not None:
            return server
        avoid = {port} if host in ("127.0.0.1", "localhost", "::1") else set()
        print(f"hakobu: no MySQL server accepts {user}@{host}:{port}; starting a private MariaDB "
              f"in {state_dir}", file=sys.stderr, flush=True)
        return _start_private(state_dir, timeout, avoid_ports=avoid)


def start_private(state_dir: Path, *, system_timezone: str | None = None, binlog: bool = False,
                  timeout: float = 60.0) -> MySQLServer:
    """Always start a private MariaDB in `state_dir` (never the shared server), on a free port.

    `system_timezone` (an IANA name such as Asia/Tokyo) becomes the server's **system** time
    zone (the TZ of the mariadbd process): what NOW() returns in sessions that keep the default
    `time_zone = SYSTEM`, and the zone of INNODB_TRX.trx_started whatever the session says.
    Tests use it to see code that silently assumes a UTC host.

    `binlog=True` adds BINLOG_OPTIONS (a binary log for change data capture). A server already
    running in `state_dir` is reused only when its binary log matches what was asked (a state
    dir keeps one role). The caller stops it."""
    state_dir = Path(state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env = None
    if system_timezone is not None:
        env = {**os.environ, "TZ": system_timezone}
    with locked(state_dir / ".lock"):
        server = _running_private(state_dir, timeout)
        if server is not None:
            _same_binlog(server, binlog)
            return server
        options = BINLOG_OPTIONS if binlog else ()
        return _start_private(state_dir, timeout, avoid_ports={DEFAULT_PORT}, env=env,
                              extra_options=options)


def _same_binlog(server: MySQLServer, binlog: bool) -> None:
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.log_bin")
        running = bool(cur.fetchone()[0])
    if running != binlog:
        state = "with" if running else "without"
        raise HakobuError(
            f"the private MariaDB running in {server.datadir.parent} (pid {server.pid}, port "
            f"{server.port}) runs {state} a binary log, but binlog={binlog} was asked for",
            hint=f"use another state dir for it, or stop that server (`kill {server.pid}`)")


# --- probing --------------------------------------------------------------------------------------

def _can_login(host: str, port: int, user: str, timeout: float = 3.0) -> bool:
    try:
        conn = pymysql.connect(host=host, port=port, user=user, password="",
                               connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)
    except (pymysql.err.Error, OSError):
        return False
    conn.close()
    return True


def _socket_login(sock: str, timeout: float = 2.0) -> pymysql.connections.Connection | None:
    try:
        return pymysql.connect(unix_socket=sock, user="root", password="", connect_timeout=timeout,
                               read_timeout=30, write_timeout=30, autocommit=True)
    except (pymysql.err.Error, OSError):
        return None


# --- the private server ---------------------------------------------------------------------------

def _paths(state_dir: Path) -> dict[str, Path]:
    sock = state_dir / "mariadbd.sock"
    if len(str(sock)) > _MAX_SOCKET_PATH:
        digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
        sock = Path(tempfile.gettempdir()) / f"hakobu-mariadb-{digest}.sock"
    return {
        "data": state_dir / "data",
        "port": state_dir / "port",
        "pid": state_dir / "mariadbd.pid",
        "socket": sock,
        "log": state_dir / "mariadb.log",
        "install_log": state_dir / "mariadb-install-db.log",
        "tmp": state_dir / "tmp",    # never /tmp: a starting mariadbd deletes its #sql* files
    }


def _running_private(state_dir: Path, timeout: float) -> MySQLServer | None:
    """The private server an earlier call started, if it still runs."""
    p = _paths(state_dir)
    pid, port = read_int(p["pid"]), read_int(p["port"])
    if pid is None or port is None or not is_our_mariadbd(pid, p["data"]):
        return None
    server = MySQLServer(host="127.0.0.1", port=port, user="root", private=True, pid=pid,
                         socket=str(p["socket"]), datadir=p["data"], log=p["log"])
    deadline = time.monotonic() + timeout
    while True:
        if _can_login("127.0.0.1", port, "root"):
            return server
        if not is_our_mariadbd(pid, p["data"]):
            return None
        if time.monotonic() >= deadline:
            raise HakobuError(
                f"the private MariaDB in {state_dir} (pid {pid}) runs but does not accept root on "
                f"127.0.0.1:{port}; see {p['log']}",
                hint=f"stop it (`kill {pid}`) and run again")
        time.sleep(0.2)


def _locate(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SEARCH_DIRS:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _locate_binaries() -> tuple[str | None, str | None]:
    return _locate("mariadbd"), _locate("mariadb-install-db") or _locate("mysql_install_db")


def _apt_install() -> None:
    print("hakobu: MariaDB not found; installing mariadb-server with apt-get (this takes a minute)",
          file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "mariadb-server"]):
        res = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise HakobuError(f"`{' '.join(cmd)}` failed (exit {res.returncode}):\n{tail}",
                              hint=_INSTALL_HINT)


def _binaries() -> tuple[str, str]:
    mariadbd, install_db = _locate_binaries()
    if (mariadbd is None or install_db is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install()
        mariadbd, install_db = _locate_binaries()
    if mariadbd is None or install_db is None:
        missing = " and ".join(n for n, b in (("mariadbd", mariadbd),
                                               ("mariadb-install-db", install_db)) if b is None)
        raise HakobuError(f"no MySQL server answers and {missing} is not installed, so hakobu "
                          "cannot start a private MariaDB", hint=_INSTALL_HINT)
    return mariadbd, install_db


def _as_root_flags() -> list[str]:
    return ["--user=root"] if os.geteuid() == 0 else []


def _init_datadir(install_db: str, datadir: Path, install_log: Path, tmpdir: Path) -> None:
    """Initialise an empty datadir, atomically: into a sibling directory, then renamed."""
    if datadir.is_dir() and not any(datadir.iterdir()):
        datadir.rmdir()
    tmp = datadir.with_name(f"{datadir.name}.init-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmpdir.mkdir(parents=True, exist_ok=True)
    cmd = [install_db, "--no-defaults", f"--datadir={tmp}", f"--tmpdir={tmpdir}",
           "--auth-root-authentication-method=normal", "--skip-test-db", *_as_root_flags()]
    with open(install_log, "wb") as out:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HakobuError(f"mariadb-install-db failed (exit {res.returncode}); see {install_log}:\n"
                          f"{log_tail(install_log)}", hint=_INSTALL_HINT)
    tmp.rename(datadir)


def _choose_port(port_file: Path, avoid: set[int]) -> int:
    previous = read_int(port_file)
    if previous and previous not in avoid and port_free(previous):
        return previous
    while True:
        port = free_port()
        if port not in avoid:
            return port


def _start_private(state_dir: Path, timeout: float, avoid_ports: set[int],
                   env: dict[str, str] | None = None,
                   extra_options: tuple[str, ...] = ()) -> MySQLServer:
    mariadbd, install_db = _binaries()
    p = _paths(state_dir)
    datadir = p["data"]
    if not datadir.is_dir() or not any(datadir.iterdir()):
        _init_datadir(install_db, datadir, p["install_log"], p["tmp"])
    p["tmp"].mkdir(parents=True, exist_ok=True)

    avoid = set(avoid_ports)
    for _attempt in range(3):
        port = _choose_port(p["port"], avoid)
        p["port"].write_text(f"{port}\n")
        log_offset = p["log"].stat().st_size if p["log"].exists() else 0
        cmd = [mariadbd, "--no-defaults", f"--datadir={datadir}", f"--port={port}",
               f"--socket={p['socket']}", f"--pid-file={p['pid']}", f"--log-error={p['log']}",
               f"--tmpdir={p['tmp']}",
               *SERVER_OPTIONS, *extra_options, *_as_root_flags()]
        with open(p["log"], "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        _CHILDREN[proc.pid] = proc
        server = MySQLServer(host="127.0.0.1", port=port, user="root", private=True, pid=proc.pid,
                             socket=str(p["socket"]), datadir=datadir, log=p["log"])
        try:
            if _wait_ready(proc, server, timeout, p["log"], log_offset):
                return server
        except BaseException:
            server.stop()
            raise
        avoid.add(port)  # lost a race for the port: try another one
    raise HakobuError(f"the private MariaDB could not bind a TCP port; see {p['log']}")


def _wait_ready(proc: subprocess.Popen, server: MySQLServer, timeout: float, log: Path,
                log_offset: int) -> bool:
    """True once root logs in over TCP; False if the port was taken; raises on any other failure."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            tail = log_tail(log, log_offset)
            if "Address already in use" in tail or "Do you already have another server" in tail:
                return False
            raise HakobuError(f"the private MariaDB exited (code {proc.returncode}) while "
                              f"starting; see {log}:\n{tail}", hint=_INSTALL_HINT)
        if _can_login(server.host, server.port, server.user, timeout=2.0):
            return True
        conn = _socket_login(server.socket)
        if conn is not None:  # up, but root may not be allowed in over TCP yet
            try:
                _grant_root_over_tcp(conn)
            finally:
                conn.close()
            if _can_login(server.host, server.port, server.user):
                return True
            raise HakobuError(f"the private MariaDB started but root cannot log in over TCP "
                              f"127.0.0.1:{server.port} with an empty password; see {log}")
        if time.monotonic() >= deadline:
            raise HakobuError(f"the private MariaDB did not accept connections within "
                              f"{timeout:.0f} s; see {log}:\n{log_tail(log, log_offset)}")
        time.sleep(0.1)


def _grant_root_over_tcp(conn: pymysql.connections.Connection) -> None:
    with conn.cursor() as cur:
        for host in ("127.0.0.1", "%"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{host}'")
            cur.execute(f"ALTER USER 'root'@'{host}' IDENTIFIED BY ''")
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION")
