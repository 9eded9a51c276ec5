"""What an adversarial review of the realtime path tried, kept as tests: a withheld value never
in an error's text, a table that rejoins the stream snapshotted again, clear refusals of a
recover that names no realtime table, and what held (rows moving between tenants of a shared
table in one transaction, a crash between two tenants' appends, a newly excluded column)."""

import pytest
from google.api_core.exceptions import NotFound

from hakobu.cli import main
from hakobu.errors import BinlogNotReady, ConfigError, explain
from hakobu.naming import change_log, live_view
from tests.cdc.rt_helpers import bq_rows, catch_up, config_of, source_rows, stream_of

RT = "- name: {t}\n  delivery: realtime\n"


def two_shops(tmp_path, binlog_server, s: str, da: str, db: str):
    """Tenants a (shop 1) and b (shop 2) streaming the shared table `o`: their config."""
    src = "  tenant_column: shop\n  tenant_value: {v}\n"
    return config_of(tmp_path / "cfg", binlog_server, {
        "a": (s, da, RT.format(t="o"), src.format(v=1)),
        "b": (s, db, RT.format(t="o"), src.format(v=2))})


def test_a_statement_logged_change_error_never_shows_a_withheld_value(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path):
    """api_token is withheld (credential-like, not released); a statement-logged UPDATE of it
    stops the stream, and the error (what reaches the service's log) names the statement's
    kind and table, never its text."""
    s, ds = schema, datasets()
    cdc_sql(f"CREATE TABLE `{s}`.users (id INT PRIMARY KEY, name VARCHAR(40), "
            "api_token VARCHAR(64))")
    cdc_sql(f"INSERT INTO `{s}`.users VALUES (1, 'a', 'old')")
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT.format(t="users"), "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    conn = binlog_server.connect(autocommit=True)
    try:
        catch_up(cs)
        with conn.cursor() as cur:
            cur.execute("SET SESSION binlog_format = 'STATEMENT'")
            cur.execute(f"UPDATE `{s}`.users SET api_token = 'sk_live_TOPSECRET42' WHERE id = 1")
        with pytest.raises(BinlogNotReady) as err:
            cs.run(blocking=False)
    finally:
        conn.close()
        io.close()
    text = str(explain(err.value)) + " " + " ".join(err.value.problems)
    assert "sk_live_TOPSECRET42" not in text


def test_a_table_leaving_and_rejoining_the_stream_is_snapshotted_again(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path):
    """Tenant r streams items and other; `other` is taken out of the tenant file for a while
    (items keeps streaming, so the tenant's checkpoint moves), then put back: the checkpoint
    did not cover it, so it is snapshotted again and has the changes made while it was out."""
    s, ds = schema, datasets()
    for t in ("items", "other"):
        cdc_sql(f"CREATE TABLE `{s}`.{t} (id INT PRIMARY KEY, v VARCHAR(40))")
        cdc_sql(f"INSERT INTO `{s}`.{t} VALUES (1, 'a'), (2, 'b')")
    both = RT.format(t="items") + RT.format(t="other")
    cfg = lambda name, tables: config_of(tmp_path / name, binlog_server,  # noqa: E731
                                         {"r": (s, ds, tables, "")})
    cs, io = stream_of(cfg("c1", both), bq_env.endpoint, tmp_path / "w1")
    try:
        catch_up(cs)
    finally:
        io.close()
    cdc_sql(f"UPDATE `{s}`.other SET v = 'changed while out' WHERE id = 1")
    cdc_sql(f"DELETE FROM `{s}`.other WHERE id = 2")
    cdc_sql(f"INSERT INTO `{s}`.items VALUES (3, 'c')")
    cs, io = stream_of(cfg("c2", RT.format(t="items")), bq_env.endpoint, tmp_path / "w2")
    try:
        catch_up(cs)
    finally:
        io.close()
    cs, io = stream_of(cfg("c3", both), bq_env.endpoint, tmp_path / "w3")
    try:
        catch_up(cs)
    finally:
        io.close()
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v")
    assert bq_rows(bq_client, ds, "other") == source_rows(cdc_sql, s, "other", "id, v")


def test_recover_of_a_tenant_without_realtime_tables_is_one_clear_line(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path, monkeypatch,
        capsys):
    s, s2 = schema, schema + "_n"
    for x in (s, s2):
        cdc_sql(f"CREATE DATABASE IF NOT EXISTS `{x}`")
        cdc_sql(f"CREATE TABLE `{x}`.items (id INT PRIMARY KEY, v VARCHAR(40))")
    root, ds = tmp_path / "cfg", datasets()
    config_of(root, binlog_server, {"r": (s, ds, RT.format(t="items"), ""),
                                    "n": (s2, datasets(), "- name: items\n", "")})
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    try:
        code = main(["stream", "--recover", "n", "--once"])
    finally:
        cdc_sql(f"DROP DATABASE `{s2}`")
    err = capsys.readouterr().err
    assert code == 1
    assert "unexpected" not in err and "KeyError" not in err, err
    assert "tenant 'n' has no `delivery: realtime` table on cluster 'main'" in err, err
    with pytest.raises(NotFound):                  # refused before anything was written
        bq_client.get_dataset(f"hakobu-test.{ds}")


def test_recover_of_a_table_that_is_not_realtime_is_refused(
        binlog_server, cdc_sql, schema, datasets, bq_env, tmp_path):
    """`--recover r --tables other` where `other` is a nightly table of r: refused by name."""
    s, ds = schema, datasets()
    for t in ("items", "other"):
        cdc_sql(f"CREATE TABLE `{s}`.{t} (id INT PRIMARY KEY, v VARCHAR(40))")
    config = config_of(tmp_path / "cfg", binlog_server,
                       {"r": (s, ds, RT.format(t="items") + "- name: other\n", "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    try:
        catch_up(cs)
        with pytest.raises(ConfigError) as caught:
            cs.recover("r", ["other"])
        assert "table 'other' of tenant 'r' is not `delivery: realtime`" in str(caught.value)
        assert "items" in caught.value.hint
    finally:
        io.close()


def test_one_transaction_over_two_tenants_moving_deleting_and_reinserting_rows(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path):
    s, da, db = schema, datasets(), datasets()
    cdc_sql(f"CREATE TABLE `{s}`.o (shop INT NOT NULL, id INT NOT NULL, v VARCHAR(20), "
            "n INT NULL, PRIMARY KEY (shop, id))")
    cdc_sql(f"INSERT INTO `{s}`.o VALUES (1,1,'a',1),(1,2,'b',NULL),(2,1,'c',3),(2,2,'d',4)")
    config = two_shops(tmp_path, binlog_server, s, da, db)
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    conn = binlog_server.connect(autocommit=False)
    try:
        catch_up(cs)
        with conn.cursor() as cur:
            cur.execute(f"UPDATE `{s}`.o SET shop = 2, id = 9 WHERE shop = 1 AND id = 1")
            cur.execute(f"DELETE FROM `{s}`.o WHERE shop = 2 AND id = 1")
            cur.execute(f"INSERT INTO `{s}`.o VALUES (2, 1, 'again', NULL)")
            cur.execute(f"UPDATE `{s}`.o SET n = NULL, v = NULL WHERE shop = 2 AND id = 2")
            cur.execute(f"UPDATE `{s}`.o SET shop = 1, id = 3 WHERE shop = 2 AND id = 2")
            cur.execute(f"UPDATE `{s}`.o SET id = 1 WHERE shop = 1 AND id = 3")
            cur.execute(f"UPDATE `{s}`.o SET id = 5 WHERE shop = 1 AND id = 1")
            cur.execute(f"UPDATE `{s}`.o SET id = 1 WHERE shop = 1 AND id = 5")
        conn.commit()
        cs, io2 = stream_of(config, bq_env.endpoint, tmp_path / "w2", merge_every_s=3600)
        cs.guard(); cs.open(); cs.snapshot_new()      # noqa: E702
        cs.run(blocking=True, for_seconds=3)          # streamed, not merged: the live view
        io2.close()
        for ds, v in ((da, 1), (db, 2)):
            want = source_rows(cdc_sql, s, "o", "shop, id, v, n", f"shop = {v}")
            key = lambda r: (r["shop"], r["id"])      # noqa: E731
            assert sorted(bq_rows(bq_client, ds, live_view("o")), key=key) == \
                sorted(want, key=key), ds
        catch_up(stream_of(config, bq_env.endpoint, tmp_path / "w3")[0])
        for ds, v in ((da, 1), (db, 2)):
            want = source_rows(cdc_sql, s, "o", "shop, id, v, n", f"shop = {v}")
            assert sorted(bq_rows(bq_client, ds, "o"), key=key) == sorted(want, key=key), ds
    finally:
        conn.close()
        io.close()


def test_a_column_newly_excluded_leaves_no_clear_value_after_recover(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path):
    s, ds = schema, datasets()
    cdc_sql(f"CREATE TABLE `{s}`.p (id INT PRIMARY KEY, v VARCHAR(40), ssn VARCHAR(20))")
    cdc_sql(f"INSERT INTO `{s}`.p VALUES (1, 'a', '111-11-1111')")
    c1 = config_of(tmp_path / "c1", binlog_server, {"r": (s, ds, RT.format(t="p"), "")})
    cs, io = stream_of(c1, bq_env.endpoint, tmp_path / "w1", merge_every_s=3600)
    try:
        catch_up(cs)
        cdc_sql(f"UPDATE `{s}`.p SET ssn = '222-22-2222' WHERE id = 1")
        cs.run(blocking=False)
    finally:
        io.close()
    c2 = config_of(tmp_path / "c2", binlog_server,
                   {"r": (s, ds, RT.format(t="p") + "  exclude: [ssn]\n", "")})
    cs, io = stream_of(c2, bq_env.endpoint, tmp_path / "w2")
    try:
        cs.guard(); cs.open()                        # noqa: E702
        cs.recover("r", None)
        cs.snapshot_new()
        cs.run(blocking=False)
    finally:
        io.close()
    for obj in ("p", live_view("p"), change_log("p")):
        cols = [f.name for f in bq_client.get_table(f"hakobu-test.{ds}.{obj}").schema]
        assert "ssn" not in cols, obj


def test_a_crash_between_two_tenants_appends_of_one_transaction(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path):
    s, da, db = schema, datasets(), datasets()
    cdc_sql(f"CREATE TABLE `{s}`.o (id INT PRIMARY KEY, shop INT NOT NULL, v VARCHAR(20))")
    cdc_sql(f"INSERT INTO `{s}`.o VALUES (1,1,'a'),(2,2,'b')")
    config = two_shops(tmp_path, binlog_server, s, da, db)
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w")
    calls = []

    def hooks(point, **kw):
        if point == "before_append":
            calls.append(kw)
            if len(calls) == 2:
                raise RuntimeError("crash between the tenants")
    try:
        catch_up(cs)
        cdc_sql(f"UPDATE `{s}`.o SET shop = 2, v = 'moved' WHERE id = 1")   # a -> b
        cdc_sql(f"UPDATE `{s}`.o SET shop = 1, v = 'moved' WHERE id = 2")   # b -> a
        cs.hooks = hooks
        with pytest.raises(RuntimeError):
            cs.run(blocking=False)
    finally:
        io.close()
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w2")
    try:
        catch_up(cs)
    finally:
        io.close()
    for ds, v in ((da, 1), (db, 2)):
        assert bq_rows(bq_client, ds, "o") == source_rows(cdc_sql, s, "o", "id, shop, v",
                                                          f"shop = {v}"), ds
