"""`hakobu stream` as a service (issue #15, part 6): SIGTERM stops it cleanly with its
checkpoint recorded, and a lost position names the command that recovers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from hakobu.cli import main
from hakobu.config import load_config
from hakobu.naming import change_log
from hakobu.realtime import CHECKPOINT_TABLE, change_seq, checkpoint_of
from resources.binlog_server import current_checkpoint
from tests.cdc.rt_helpers import PROJECT, bq_rows, config_of, source_rows, stream_of

REPO = Path(__file__).resolve().parents[2]
ITEMS = "CREATE TABLE `{s}`.items (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
RT = "- name: items\n  delivery: realtime\n"



def _setup(binlog_server, cdc_sql, s, ds, root: Path, monkeypatch):
    cdc_sql(ITEMS.format(s=s))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, 31)])
    config_of(root / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root / "cfg"))
    monkeypatch.setenv("HAKOBU_WORK_DIR", str(root / "w"))


def _count(bq_client, ds: str, table: str, where: str = "TRUE") -> int:
    try:
        return list(bq_client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.{ds}.{table}` "
                                    f"WHERE {where}").result())[0]["n"]
    except Exception:          # noqa: BLE001 — not made yet: the stream is still starting
        return 0


def test_sigterm_flushes_records_the_checkpoint_and_exits_0(
        binlog_server, cdc_sql, cdc_conn, schema, datasets, bq_env, bq_client, tmp_path,
        monkeypatch):
    s, ds = schema, datasets()
    _setup(binlog_server, cdc_sql, s, ds, tmp_path, monkeypatch)
    proc = subprocess.Popen([sys.executable, "-m", "hakobu.cli", "stream", "--for", "120",
                             "--json"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _count(bq_client, ds, CHECKPOINT_TABLE) == 0:    # snapshot done, streaming
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stream never recorded a checkpoint"
            time.sleep(0.5)
        cdc_sql(f"UPDATE `{s}`.items SET v = 'streamed' WHERE id <= 5")
        cdc_sql(f"DELETE FROM `{s}`.items WHERE id = 6")
        written = change_seq(current_checkpoint(cdc_conn).position)
        while _count(bq_client, ds, change_log("items")) < 6:  # the rows reached BigQuery
            assert time.monotonic() < deadline, "the changes were never streamed"
            time.sleep(0.3)
        cdc_sql(f"INSERT INTO `{s}`.items VALUES (100, 'at the signal', 1)")
        time.sleep(0.5)                          # read, perhaps not flushed yet
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert time.monotonic() - stopped < 8, "SIGTERM took too long"
    seqs = [r["seq"] for r in bq_client.query(
        f"SELECT seq FROM `{PROJECT}.{ds}.{CHECKPOINT_TABLE}`").result()]
    assert max(seqs) >= written           # the streamed changes are behind the checkpoint
    # a rerun continues without loss: everything, including what came at and after the signal
    cdc_sql(f"UPDATE `{s}`.items SET n = -n WHERE id IN (7, 100)")
    assert main(["stream", "--once"]) == 0
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")


def test_a_lost_position_names_the_recover_command_which_recovers(
        binlog_server, cdc_sql, cdc_conn, schema, datasets, bq_env, bq_client, tmp_path,
        monkeypatch, capsys):
    s, ds = schema, datasets()
    _setup(binlog_server, cdc_sql, s, ds, tmp_path, monkeypatch)
    assert main(["stream", "--once"]) == 0
    cdc_sql(f"UPDATE `{s}`.items SET v = 'before the reset' WHERE id = 1")
    assert main(["stream", "--once"]) == 0
    recorded = checkpoint_of(list(bq_client.query(
        f"SELECT checkpoint FROM `{PROJECT}.{ds}.{CHECKPOINT_TABLE}` ORDER BY recorded_at DESC "
        "LIMIT 1").result())[0]["checkpoint"])
    with cdc_conn.cursor() as cur:
        cur.execute("RESET MASTER")             # the log starts again: the position is gone
    cdc_sql(f"UPDATE `{s}`.items SET v = 'after the reset' WHERE id = 2")
    capsys.readouterr()
    assert main(["stream", "--once"]) == 1
    err = capsys.readouterr().err
    assert str(recorded.position.file) in err, err
    assert "to recover:" in err and "hakobu stream --cluster main --recover r" in err, err
    # the command it names does recover: a new generation from the new position
    assert main(["stream", "--once", "--cluster", "main", "--recover", "r"]) == 0
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")


def test_a_second_stream_of_a_tenant_is_refused_while_one_runs(
        binlog_server, cdc_sql, schema, datasets, bq_env, tmp_path, monkeypatch, capsys):
    """One stream per tenant: a `--recover` beside the running service would race its merges;
    it is refused with one line naming the holder, and works once the service stopped (a
    killed one frees its claim with its connection)."""
    s, ds = schema, datasets()
    _setup(binlog_server, cdc_sql, s, ds, tmp_path, monkeypatch)
    assert main(["stream", "--once"]) == 0
    running, io = stream_of(load_config(tmp_path / "cfg"), bq_env.endpoint, tmp_path / "w2")
    try:
        running.open()
        running.claim()
        capsys.readouterr()
        assert main(["stream", "--once", "--recover", "r"]) == 1
        err = capsys.readouterr().err
        assert "another `hakobu stream` is streaming tenant 'r' on cluster 'main'" in err, err
        assert "Traceback" not in err and "stop that stream first" in err
    finally:
        running.close()
        io.close()
    assert main(["stream", "--once", "--recover", "r"]) == 0
