"""Realtime delivery under crashes, through the CLI, and within BigQuery's write budget."""

import json

import pytest

from hakobu.cli import main
from hakobu.naming import change_log
from tests.cdc.rt_helpers import bq_rows, catch_up, config_of, source_rows, stream_of
from tests.helpers import dataset_factory

SIMPLE = "CREATE TABLE `{s}`.items (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
RT = "- name: items\n  delivery: realtime\n  chunk_rows: 10\n"
# (hook, sink, whether it is part of the snapshot): the snapshot's own merge is the nightly
# sink's ("customer"), the stream's is "realtime"
POINTS = [("before_snapshot", None, True), ("after_chunk", None, True),
          ("before_merge", "customer", True), ("after_merge", "customer", True),
          ("after_snapshot", None, True), ("before_append", None, False),
          ("after_append", None, False), ("before_checkpoint", None, False),
          ("before_merge", "realtime", False), ("after_merge", "realtime", False)]


class Crash(Exception):
    pass


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_rt")


def _items(cdc_sql, s, n=60):
    cdc_sql(SIMPLE.format(s=s))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, n + 1)])


def _churn(cdc_sql, s, k: int):
    cdc_sql(f"UPDATE `{s}`.items SET v = CONCAT(v, '{k}'), n = n + {k} WHERE id % 7 = {k % 7}")
    cdc_sql(f"DELETE FROM `{s}`.items WHERE id = {10 + k}")
    cdc_sql(f"INSERT INTO `{s}`.items VALUES ({500 + k}, 'k{k}', {k})")


@pytest.mark.parametrize("point, sink, in_snapshot", POINTS)
def test_a_crash_anywhere_then_a_rerun_delivers_the_source(
        point, sink, in_snapshot, binlog_server, cdc_sql, cdc_schema, datasets, bq_env, bq_client, tmp_path):
    s, ds = cdc_schema, datasets()
    _items(cdc_sql, s)
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    hit = []

    def crash(p, **kw):
        if p == point and kw.get("sink") == sink and not hit:
            _churn(cdc_sql, s, 1)           # a write at the moment of the crash, too
            hit.append(p)
            raise Crash(p)
    first, io = stream_of(config, bq_env.endpoint, tmp_path / "w", merge_every_s=0)
    first.hooks = crash
    try:
        if in_snapshot:
            with pytest.raises(Crash):
                catch_up(first)
        else:
            first.guard()                   # snapshot fine; crash while streaming
            first.open()
            first.snapshot_new()
            _churn(cdc_sql, s, 2)
            with pytest.raises(Crash):
                first.run(blocking=False)
    finally:
        io.close()
    assert hit == [point]
    _churn(cdc_sql, s, 3)
    again, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    try:
        catch_up(again)
    finally:
        io.close()
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")


def test_cli_once_then_recover(binlog_server, cdc_sql, cdc_schema, datasets, bq_env, bq_client,
                               tmp_path, monkeypatch, capsys):
    s, ds = cdc_schema, datasets()
    _items(cdc_sql, s)
    config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("HAKOBU_WORK_DIR", str(tmp_path / "w"))
    assert main(["stream", "--once", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["snapshots"] == ["r/items"]
    _churn(cdc_sql, s, 4)
    assert main(["stream", "--once", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["snapshots"] == [] and second["tables"]["r/items"]["merges"] == 1
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")
    # a reload from a new position: a new generation, the older change-log rows ignored
    cdc_sql(f"UPDATE `{s}`.items SET v = 'after recover' WHERE id = 2")
    assert main(["stream", "--once", "--json", "--recover", "r", "--tables", "items"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["snapshots"] == ["r/items"]
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")
    assert main(["stream", "--once", "--tables", "items"]) == 1     # --tables needs --recover


def test_writes_per_table_stay_within_the_budget(binlog_server, cdc_sql, cdc_schema, datasets,
                                                 strict_env, bq_client, tmp_path):
    s, ds = cdc_schema, datasets()
    _items(cdc_sql, s)
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    cs, io = stream_of(config, strict_env.url, tmp_path / "w", merge_every_s=0)
    rounds = 3
    try:
        cs.guard()
        cs.open()
        cs.snapshot_new()
        before = strict_env.stats()["tables"]
        for k in range(rounds):
            _churn(cdc_sql, s, k)
            cs.run(blocking=False)
    finally:
        io.close()
    after = strict_env.stats()["tables"]

    def writes(table, stats):
        return stats.get(f"hakobu-test.{ds}.{table}", {}).get("writes_today", 0)
    assert writes("items", before) <= 1                      # the snapshot: one MERGE
    assert writes("items", after) - writes("items", before) == rounds   # one MERGE a round
    assert writes(change_log("items"), after) == 0           # insertAll: never a table write
    assert writes("_hakobu_rt_checkpoint", after) == 0
    # the state rows of a tenant: one compare-and-set MERGE per round (+2 for the snapshot)
    assert writes("_hakobu_state", after) - writes("_hakobu_state", before) == rounds
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")
