"""ensure_mysql: the shared server is found; otherwise a real private MariaDB is started, reused
(also by another process) and stopped."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pymysql
import pytest
import sqlalchemy as sa

from hakobu.errors import HakobuError
from hakobu.localenv import mariadb
from hakobu.localenv.emulator import free_port
from hakobu.localenv.mariadb import MySQLServer, ensure_mysql

EMOJI = "hakobu 🚚📦 ok"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = open(f"/proc/{pid}/stat").read()
        return stat[stat.rindex(")") + 2] != "Z"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _shared_reachable() -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                        connect_timeout=3).close()
    except (pymysql.err.Error, OSError):
        return False
    return True


@pytest.fixture
def nobody_listens(monkeypatch):
    """Point HAKOBU_MYSQL_* at a port with no server, so ensure_mysql must start a private one."""
    port = free_port()
    monkeypatch.setenv("HAKOBU_MYSQL_HOST", "127.0.0.1")
    monkeypatch.setenv("HAKOBU_MYSQL_PORT", str(port))
    monkeypatch.delenv("HAKOBU_MYSQL_USER", raising=False)
    return port


@pytest.fixture
def state_dir(tmp_path):
    state = tmp_path / "mariadb"
    servers: list[MySQLServer] = []
    yield state, servers
    for server in servers:  # whatever happened in the test, leave no server behind
        server.stop()
    shutil.rmtree(state, ignore_errors=True)  # the datadir is ~110 MB


def test_private_server_start_use_reuse_stop_restart(nobody_listens, state_dir):
    state, servers = state_dir
    server = ensure_mysql(state)
    servers.append(server)
    assert server.private and server.pid and _alive(server.pid)
    assert server.port != nobody_listens and server.user == "root" and server.host == "127.0.0.1"
    assert server.url() == f"mysql+pymysql://root@127.0.0.1:{server.port}/?charset=utf8mb4"
    assert server.url("db1") == f"mysql+pymysql://root@127.0.0.1:{server.port}/db1?charset=utf8mb4"
    assert (state / "data" / "mysql").is_dir() and (state / "mariadb.log").exists()

    engine = sa.create_engine(server.url())
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT @@character_set_server")).scalar() == "utf8mb4"
        conn.execute(sa.text("CREATE DATABASE hk_t CHARACTER SET utf8mb4"))
    engine.dispose()
    engine = sa.create_engine(server.url("hk_t"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(40))"
                             " CHARACTER SET utf8mb4"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, :s)"), {"s": EMOJI})
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT s FROM t WHERE id = 1")).scalar() == EMOJI
        assert conn.execute(sa.text("SELECT CHAR_LENGTH(s) FROM t")).scalar() == len(EMOJI)
    engine.dispose()

    again = ensure_mysql(state)
    assert (again.pid, again.port, again.private) == (server.pid, server.port, True)

    server.stop()
    assert not _alive(server.pid)
    assert not _port_open(server.port)
    server.stop()  # idempotent

    # a later start reuses the datadir and the previous port
    restarted = ensure_mysql(state)
    servers.append(restarted)
    assert restarted.private and restarted.pid != server.pid and restarted.port == server.port
    with restarted.connect("hk_t") as conn, conn.cursor() as cur:
        cur.execute("SELECT s FROM t")
        assert cur.fetchone() == (EMOJI,)
    restarted.stop()
    assert not _alive(restarted.pid) and not _port_open(restarted.port)


def test_private_server_outlives_the_process_that_started_it(nobody_listens, state_dir):
    state, servers = state_dir
    code = textwrap.dedent(f"""
        from hakobu.localenv.mariadb import ensure_mysql
        s = ensure_mysql({str(state)!r})
        print(s.pid, s.port, s.private)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                         env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    pid, port, private = out.stdout.split()
    pid, port = int(pid), int(port)
    assert private == "True" and _alive(pid)

    server = ensure_mysql(state)  # not our child: found through the pid and port files
    servers.append(server)
    assert (server.pid, server.port, server.private) == (pid, port, True)
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    server.stop()
    assert not _alive(pid) and not _port_open(port)


@pytest.mark.skipif(not _shared_reachable(), reason="no MySQL server accepts root@127.0.0.1:3306")
def test_shared_server_is_found(tmp_path, monkeypatch):
    for var in ("HAKOBU_MYSQL_HOST", "HAKOBU_MYSQL_PORT", "HAKOBU_MYSQL_USER"):
        monkeypatch.delenv(var, raising=False)
    state = tmp_path / "unused"
    server = ensure_mysql(state)
    assert (server.host, server.port, server.user) == ("127.0.0.1", 3306, "root")
    assert server.private is False and server.pid is None and server.socket is None
    assert not state.exists()  # nothing was started
    server.stop()  # no-op for a shared server
    engine = sa.create_engine(server.url())
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_environment_overrides_and_bad_port(monkeypatch, tmp_path):
    monkeypatch.setenv("HAKOBU_MYSQL_PORT", "not-a-port")
    with pytest.raises(HakobuError, match="HAKOBU_MYSQL_PORT"):
        ensure_mysql(tmp_path)

    seen = []
    monkeypatch.setattr(mariadb, "_can_login",
                        lambda h, p, u, timeout=3.0: seen.append((h, p, u)) or True)
    monkeypatch.setenv("HAKOBU_MYSQL_HOST", "db.example")
    monkeypatch.setenv("HAKOBU_MYSQL_PORT", "3307")
    monkeypatch.setenv("HAKOBU_MYSQL_USER", "etl")
    server = ensure_mysql(tmp_path)
    assert seen == [("db.example", 3307, "etl")]
    assert server.url("a b") == "mysql+pymysql://etl@db.example:3307/a%20b?charset=utf8mb4"


def test_missing_mariadb_gives_a_clear_error(monkeypatch, nobody_listens, tmp_path):
    monkeypatch.setattr(mariadb, "_locate_binaries", lambda: (None, None))
    installs = []
    monkeypatch.setattr(mariadb, "_apt_install", lambda: installs.append(1))
    with pytest.raises(HakobuError) as err:
        ensure_mysql(tmp_path)
    text = str(err.value)
    assert "mariadbd" in text and "apt-get install mariadb-server" in text
    assert "HAKOBU_MYSQL_HOST" in text
    # as root with apt-get the install is attempted first (stubbed here)
    assert installs == ([1] if os.geteuid() == 0 and shutil.which("apt-get") else [])
