"""Realtime delivery end to end on the binlog server and the emulator (issue #15): snapshot
then stream, shared tables, the live view, the nightly job leaving realtime tables alone."""

import pytest

from hakobu.naming import change_log, live_view
from hakobu.sync import sync_tenant
from tests.cdc.rt_helpers import bq_rows, catch_up, config_of, source_rows, stream_of
from tests.helpers import dataset_factory

SIMPLE = "CREATE TABLE `{s}`.`{t}` (id INT PRIMARY KEY, v VARCHAR(40), n INT{extra})"
RT = "- name: {t}\n  delivery: realtime\n"


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_rt")


def test_changes_while_the_snapshot_reads_are_neither_lost_nor_doubled(
        binlog_server, cdc_sql, cdc_schema, datasets, bq_env, bq_client, tmp_path):
    s, ds = cdc_schema, datasets()
    cdc_sql(SIMPLE.format(s=s, t="items", extra=""))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, 301)])
    config = config_of(tmp_path / "cfg", binlog_server,
                       {"r": (s, ds, RT.format(t="items") + "  chunk_rows: 20\n", "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    seen = []

    def hooks(point, **kw):
        # between the snapshot's chunks: updates of read and unread rows, deletes, inserts
        if point == "after_chunk" and kw["rows"] in (20, 100, 200):
            n = kw["rows"]
            cdc_sql(f"UPDATE `{s}`.items SET v = CONCAT(v, '+'), n = n * 10 "
                    f"WHERE id IN ({n - 5}, {n + 50}, 299)")
            cdc_sql(f"DELETE FROM `{s}`.items WHERE id IN ({n - 10}, {n + 60})")
            cdc_sql(f"INSERT INTO `{s}`.items VALUES ({1000 + n}, 'new', {n})")
            cdc_sql(f"UPDATE `{s}`.items SET id = {2000 + n} WHERE id = {n + 70}")
            seen.append(n)
    cs.hooks = hooks
    try:
        catch_up(cs)
    finally:
        io.close()
    assert seen == [20, 100, 200]
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")
    # the change log holds every change once per (seq, idx): replays are told apart from news
    logged = list(bq_client.query(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT FORMAT('%d:%d', _hakobu_seq, _hakobu_idx)) AS d "
        f"FROM `hakobu-test.{ds}.{change_log('items')}`").result())[0]
    assert logged["n"] == logged["d"] > 0


def test_shared_table_each_tenant_sees_only_its_rows_and_strangers_are_dropped(
        binlog_server, cdc_sql, cdc_schema, datasets, bq_env, bq_client, tmp_path):
    s, da, db = cdc_schema, datasets(), datasets()
    cdc_sql(SIMPLE.format(s=s, t="orders", extra=", shop INT NOT NULL"))
    cdc_sql.many(f"INSERT INTO `{s}`.orders VALUES (%s, %s, %s, %s)",
                 [(i, f"v{i}", i, i % 3) for i in range(1, 61)])
    src = "  tenant_column: shop\n  tenant_value: {v}\n"
    config = config_of(tmp_path / "cfg", binlog_server, {
        "a": (s, da, RT.format(t="orders"), src.format(v=1)),
        "b": (s, db, RT.format(t="orders"), src.format(v=2))})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    try:
        cs.guard()
        cs.open()
        cs.snapshot_new()
        cdc_sql(f"UPDATE `{s}`.orders SET v = 'moved', shop = 2 WHERE id = 1")   # a → b
        cdc_sql(f"UPDATE `{s}`.orders SET n = -n WHERE shop IN (0, 1, 2)")
        cdc_sql(f"DELETE FROM `{s}`.orders WHERE id IN (4, 5)")
        cdc_sql(f"INSERT INTO `{s}`.orders VALUES (100, 'x', 1, 1), (101, 'y', 2, 2), "
                "(102, 'z', 3, 0)")
        stats = cs.run(blocking=False)
    finally:
        io.close()
    for ds, value in ((da, 1), (db, 2)):
        assert bq_rows(bq_client, ds, "orders") == source_rows(
            cdc_sql, s, "orders", "id, v, n, shop", f"shop = {value}")
    assert stats.dropped[f"{s}.orders"] >= 20     # shop 0: nobody's (updates, the insert)


def test_live_view_shows_an_unmerged_update_and_delete(
        binlog_server, cdc_sql, cdc_schema, datasets, bq_env, bq_client, tmp_path):
    s, ds = cdc_schema, datasets()
    cdc_sql(SIMPLE.format(s=s, t="items", extra=""))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, 11)])
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT.format(t="items"), "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w", merge_every_s=3600)
    try:
        cs.guard()
        cs.open()
        cs.snapshot_new()
        merged_before = bq_rows(bq_client, ds, "items")
        cdc_sql(f"UPDATE `{s}`.items SET v = 'changed' WHERE id = 3")
        cdc_sql(f"DELETE FROM `{s}`.items WHERE id = 7")
        cdc_sql(f"INSERT INTO `{s}`.items VALUES (11, 'eleven', 11)")
        cs.run(blocking=True, for_seconds=3)      # streams, but no merge is due
    finally:
        io.close()
    assert bq_rows(bq_client, ds, "items") == merged_before           # not merged yet
    assert bq_rows(bq_client, ds, live_view("items")) == source_rows(cdc_sql, s, "items",
                                                                      "id, v, n")


def test_the_nightly_job_leaves_a_realtime_table_out_and_refuses_it_by_name(
        binlog_server, cdc_sql, cdc_schema, datasets, bq_env, tmp_path):
    s, ds = cdc_schema, datasets()
    for t in ("items", "other"):
        cdc_sql(SIMPLE.format(s=s, t=t, extra=""))
    config = config_of(tmp_path / "cfg", binlog_server,
                       {"r": (s, ds, RT.format(t="items") + "- name: other\n", "")})
    _, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    try:
        [other] = sync_tenant(config, "r", io=io)
        assert other.table == "other" and other.ok
        [refused] = sync_tenant(config, "r", io=io, tables=["items"])
        assert not refused.ok and "hakobu stream" in refused.error
    finally:
        io.close()
