"""`--recover` while another `hakobu stream` of the cluster still runs: the old process's merge
round must not write its older rows over the new generation's snapshot (the merge is guarded by
the state row's version, resources.changelog.RealtimeDataset.merge), and its compare-and-set
fails by name. Also: a restart rebuilds the live view of every streaming table.
(Found by review; databases and datasets prefixed `hk_rvw_`.)"""

import pytest

from hakobu.errors import LoadError
from hakobu.naming import live_view
from tests.cdc.rt_helpers import bq_rows, catch_up, config_of, source_rows, stream_of
from tests.helpers import dataset_factory, fresh_schema

SIMPLE = "CREATE TABLE `{s}`.`items` (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
RT = "- name: items\n  delivery: realtime\n"


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_rvw")


@pytest.fixture
def rvw_schema(cdc_sql):
    yield from fresh_schema(cdc_sql, "hk_rvw")


def test_the_old_streams_merge_cannot_undo_a_recover(binlog_server, cdc_sql, rvw_schema,
                                                     datasets, bq_env, bq_client, tmp_path):
    s, ds = rvw_schema, datasets()
    cdc_sql(SIMPLE.format(s=s))
    cdc_sql(f"INSERT INTO `{s}`.items VALUES (1, 'v1', 1), (2, 'v2', 2)")
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    old, io1 = stream_of(config, bq_env.endpoint, tmp_path / "w1", merge_every_s=3600)
    new, io2 = stream_of(config, bq_env.endpoint, tmp_path / "w2")
    try:
        catch_up(old)                                  # the running `hakobu stream`
        cdc_sql(f"UPDATE `{s}`.items SET v = 'a' WHERE id = 1")
        old.run(blocking=True, for_seconds=1.5)        # appended + checkpointed, not merged yet
        cdc_sql(f"UPDATE `{s}`.items SET v = 'b' WHERE id = 1")
        new.open()                                     # `hakobu stream --recover r` meanwhile
        new.recover("r", None)
        new.snapshot_new()                             # the snapshot reads 'b'
        with pytest.raises(LoadError, match="moved by another process"):
            old._merge_due(force=True)                 # the old process's round: nothing lands
        assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")
        new.run(blocking=False)
    finally:
        io1.close()
        io2.close()
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")


def test_a_restart_rebuilds_a_missing_live_view(binlog_server, cdc_sql, rvw_schema, datasets,
                                                bq_env, bq_client, tmp_path):
    s, ds = rvw_schema, datasets()
    cdc_sql(SIMPLE.format(s=s))
    cdc_sql(f"INSERT INTO `{s}`.items VALUES (1, 'v1', 1)")
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w1")
    try:
        catch_up(cs)
    finally:
        io.close()
    # as if the process died between the state's move to STREAMING and the view's DDL
    bq_client.query(f"DROP VIEW `hakobu-test.{ds}.{live_view('items')}`").result()
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w2")
    try:
        cs.open()
    finally:
        io.close()
    rows = list(bq_client.query(f"SELECT id, v FROM `hakobu-test.{ds}.{live_view('items')}`")
                .result())
    assert [(r["id"], r["v"]) for r in rows] == [(1, "v1")]
