"""What the binlog reader refuses rather than deliver wrong rows, and what it reads through
(docs/realtime.md "What the reader refuses"): a session's partial row images, savepoints inside
a transaction, DDL on a watched table, a renamed column the reader did not see, and a
statement-logged change behind a leading comment. Each runs a real stream on the private
binlog server into the emulator and asserts the named error or the source's rows."""

import pytest

from hakobu.errors import BinlogNotReady, SchemaError, SourceTableChanged
from tests.cdc.rt_helpers import bq_rows, catch_up, config_of, source_rows, stream_of
from tests.helpers import dataset_factory, fresh_schema

SIMPLE = "CREATE TABLE `{s}`.`{t}` (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
RT = "- name: {t}\n  delivery: realtime\n"


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_grd")


@pytest.fixture
def grd_schema(cdc_sql):
    yield from fresh_schema(cdc_sql, "hk_grd")


@pytest.fixture
def streamed(binlog_server, cdc_sql, grd_schema, datasets, bq_env, tmp_path):
    """A caught-up stream of `items` (rows 1..3): (stream, schema, dataset)."""
    s, ds = grd_schema, datasets()
    cdc_sql(SIMPLE.format(s=s, t="items"))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, 4)])
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT.format(t="items"), "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    try:
        catch_up(cs)
        yield cs, s, ds
    finally:
        io.close()


def session(binlog_server, statements):
    """One application session running `statements` (autocommit)."""
    conn = binlog_server.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            for st in statements:
                cur.execute(st)
    finally:
        conn.close()


def same(bq_client, cdc_sql, s, ds):
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")


@pytest.mark.parametrize("change", ["UPDATE `{s}`.items SET n = n + 100 WHERE id = 1",
                                    "DELETE FROM `{s}`.items WHERE id = 2"])
def test_a_session_with_minimal_row_images_stops_the_stream(
        binlog_server, cdc_sql, streamed, change):
    cs, s, _ = streamed
    # the global guard sees FULL; one application session writes MINIMAL images (only the key
    # before, only the changed columns after); NOBLOB leaves out unchanged BLOBs the same way
    session(binlog_server, ["SET SESSION binlog_row_image = 'MINIMAL'", change.format(s=s)])
    with pytest.raises(BinlogNotReady) as caught:
        cs.run(blocking=False)
    assert f"{s}.items" in str(caught.value) and "partial row image" in str(caught.value)
    assert "binlog_row_image=FULL for every session" in caught.value.hint
    assert "--recover r --tables items" in caught.value.hint


def test_savepoints_inside_a_transaction_keep_every_change(
        binlog_server, cdc_sql, bq_client, streamed):
    cs, s, ds = streamed
    # an ORM's nested atomic blocks: changes before and after SAVEPOINT, RELEASE, and a
    # ROLLBACK TO whose InnoDB rows the server never logs
    session(binlog_server, ["BEGIN", f"UPDATE `{s}`.items SET v = 'before-sp' WHERE id = 1",
                            f"INSERT INTO `{s}`.items VALUES (10, 'before-sp', 10)",
                            "SAVEPOINT sp1",
                            f"UPDATE `{s}`.items SET v = 'after-sp' WHERE id = 2",
                            "RELEASE SAVEPOINT sp1",
                            "SAVEPOINT sp2",
                            f"UPDATE `{s}`.items SET v = 'rolled-back' WHERE id = 3",
                            f"INSERT INTO `{s}`.items VALUES (11, 'rolled-back', 11)",
                            "ROLLBACK TO SAVEPOINT sp2",
                            f"UPDATE `{s}`.items SET n = 33 WHERE id = 3", "COMMIT"])
    cs.run(blocking=False)
    same(bq_client, cdc_sql, s, ds)
    got = {r["id"]: r for r in bq_rows(bq_client, ds, "items")}
    assert got[1]["v"] == "before-sp" and 10 in got and got[2]["v"] == "after-sp"
    assert got[3] == {"id": 3, "v": "v3", "n": 33} and 11 not in got


def test_an_xa_transaction_on_a_watched_table_stops_the_stream(binlog_server, streamed):
    cs, s, _ = streamed
    session(binlog_server, ["XA START 'x1'", f"UPDATE `{s}`.items SET n = 7 WHERE id = 1",
                            "XA END 'x1'", "XA PREPARE 'x1'", "XA COMMIT 'x1'"])
    with pytest.raises(BinlogNotReady) as caught:
        cs.run(blocking=False)
    assert "XA" in str(caught.value) and f"{s}.items" in str(caught.value)


@pytest.mark.parametrize("ddl", [
    "TRUNCATE TABLE `{s}`.items",
    "/* app */ TRUNCATE `{s}`.`items`",
    "ALTER TABLE `{s}`.items ADD COLUMN extra INT",
    "RENAME TABLE `{s}`.items TO `{s}`.items_gone",
    "DROP TABLE `{s}`.items",
])
def test_ddl_on_a_watched_table_stops_the_stream(cdc_sql, streamed, ddl):
    cs, s, _ = streamed
    cdc_sql(ddl.format(s=s))
    with pytest.raises(SourceTableChanged) as caught:
        cs.run(blocking=False)
    assert caught.value.tables == ["items"] and isinstance(caught.value, SchemaError)
    assert "hakobu stream --cluster main --recover r --tables items" in caught.value.hint


@pytest.mark.parametrize("ddl", ["ALTER TABLE `{s}`.items ADD COLUMN extra INT",
                                 "ALTER TABLE `{s}`.items MODIFY n BIGINT",
                                 "ALTER TABLE `{s}`.items DROP COLUMN n"])
def test_after_a_column_change_the_named_recover_delivers_the_new_shape(
        binlog_server, cdc_sql, bq_client, tmp_path, streamed, ddl):
    """The stream stops at the DDL; a restart without --recover refuses the old change log
    instead of failing at its merge; the recover the error names makes the log again with the
    new columns, and changes after it arrive in the new shape."""
    cs, s, ds = streamed
    cdc_sql(ddl.format(s=s))
    with pytest.raises(SourceTableChanged):
        cs.run(blocking=False)
    cols = [c for (c,) in cdc_sql(f"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                                  f"TABLE_SCHEMA = '{s}' AND TABLE_NAME = 'items' "
                                  "ORDER BY ORDINAL_POSITION")]
    config = config_of(tmp_path / "cfg2", binlog_server,
                       {"r": (s, ds, RT.format(t="items"), "")})
    again, io = stream_of(config, cs.io.settings.endpoint, tmp_path / "w2")
    try:
        again.open()
        with pytest.raises(SourceTableChanged) as caught:
            again.run(blocking=False)
        assert "--recover r --tables items" in caught.value.hint
        again.recover("r", ["items"])
        assert again.snapshot_new() == ["r/items"]
        sets = ", ".join(f"`{c}` = `{c}` + 1" for c in cols if c in ("n", "extra"))
        cdc_sql(f"UPDATE `{s}`.items SET v = 'new shape'" + (f", {sets}" if sets else "")
                + " WHERE id = 2")
        again.run(blocking=False)
        got = [{c: r[c] for c in cols} for r in bq_rows(bq_client, ds, "items")]
        assert got == source_rows(cdc_sql, s, "items", ", ".join(cols))
        assert got[1]["v"] == "new shape"
    finally:
        io.close()


def test_ddl_on_a_table_whose_name_contains_a_watched_one_is_read_through(
        cdc_sql, bq_client, streamed):
    cs, s, ds = streamed
    cdc_sql(SIMPLE.format(s=s, t="items_old"))
    cdc_sql(f"TRUNCATE TABLE `{s}`.items_old")
    cdc_sql(f"ALTER TABLE `{s}`.`items_old` ADD COLUMN items INT")
    cdc_sql(f"UPDATE `{s}`.items SET v = 'after' WHERE id = 2")
    cs.run(blocking=False)
    same(bq_client, cdc_sql, s, ds)


def test_a_column_renamed_where_the_reader_cannot_see_it_is_refused(
        binlog_server, cdc_sql, streamed):
    cs, s, _ = streamed
    # the DDL is not in the binlog (sql_log_bin=0, as an online schema tool or an operator may
    # run it); the next change's row has v2 where the plan has v
    session(binlog_server, ["SET SESSION sql_log_bin = 0",
                            f"ALTER TABLE `{s}`.items CHANGE v v2 VARCHAR(40)"])
    cdc_sql(f"UPDATE `{s}`.items SET n = n + 100 WHERE id = 1")
    with pytest.raises(SchemaError) as caught:
        cs.run(blocking=False)
    assert "['v']" in str(caught.value) and f"{s}.items" in str(caught.value)
    assert "--recover r --tables items" in caught.value.hint


@pytest.mark.parametrize("comment", ["/* app:42 */ ", "-- app:42\n", "# app:42\n", "\n  "])
def test_a_statement_logged_change_behind_a_comment_stops_the_stream(
        binlog_server, streamed, comment):
    cs, s, _ = streamed
    session(binlog_server, ["SET SESSION binlog_format = 'STATEMENT'",
                            f"{comment}UPDATE `{s}`.items SET v = 'stmt' WHERE id = 1"])
    with pytest.raises(BinlogNotReady) as caught:
        cs.run(blocking=False)
    assert "logged a change as a statement" in str(caught.value)
