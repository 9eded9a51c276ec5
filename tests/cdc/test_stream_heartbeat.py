"""The idle checkpoint heartbeat (issue #15, part 6): a tenant whose realtime tables stay idle
keeps its saved position up with the reader, so purging the old binlog files does not cost it a
PositionLost on the next start."""

import pytest

from hakobu.realtime import checkpoint_of
from resources.binlog_server import binary_logs
from tests.cdc.rt_helpers import bq_rows, config_of, source_rows, stream_of
from tests.helpers import dataset_factory, fresh_schema

ITEMS = "CREATE TABLE `{s}`.items (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
RT = "- name: items\n  delivery: realtime\n"


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_rto")


@pytest.fixture
def schemas(cdc_sql):
    made = []

    def make():
        gen = fresh_schema(cdc_sql, "hk_rto")
        made.append(gen)
        return next(gen)
    yield make
    for gen in made:
        next(gen, None)


def _checkpoint(cs, tenant):
    text = cs.tenants[tenant].rt.latest_checkpoint("main")
    return checkpoint_of(text) if text else None


def test_an_idle_tenants_checkpoint_moves_and_survives_a_purge(
        binlog_server, cdc_sql, cdc_conn, schemas, datasets, bq_env, bq_client, tmp_path):
    sa, sb, da, db = schemas(), schemas(), datasets(), datasets()
    for s in (sa, sb):
        cdc_sql(ITEMS.format(s=s))
        cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                     [(i, f"v{i}", i) for i in range(1, 21)])
    cdc_sql(f"CREATE TABLE `{sa}`.other (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
    config = config_of(tmp_path / "cfg", binlog_server,
                       {"a": (sa, da, RT, ""), "b": (sb, db, RT, "")})
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w", checkpoint_every_s=1.0)
    rounds = []

    def on_round():
        # a streams; then only a table nobody streams changes, across a log rotation
        n = len(rounds)
        rounds.append(n)
        if n < 8:
            cdc_sql(f"UPDATE `{sa}`.items SET n = n + 1 WHERE id = {n + 1}")
        elif n == 10:
            cdc_sql("FLUSH BINARY LOGS")
        elif n > 10:
            cdc_sql(f"INSERT INTO `{sa}`.other (v) VALUES ({n})")
    try:
        cs.guard()
        cs.open()
        cs.snapshot_new()
        b_start = checkpoint_of(cs.tenants["b"].tables["items"].state.start)
        cs.run(blocking=True, for_seconds=6, on_round=on_round)
        newest = binary_logs(cdc_conn)[-1][0]
        for tenant in ("a", "b"):   # a's last own change is in the old file, b never had one
            assert _checkpoint(cs, tenant).position.file == newest, tenant
    finally:
        io.close()
    assert len(rounds) > 12           # rounds after the rotation happened
    with cdc_conn.cursor() as cur:
        cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
    assert b_start.position.file not in dict(binary_logs(cdc_conn))   # b's old start is gone
    cdc_sql(f"UPDATE `{sb}`.items SET v = 'after the purge' WHERE id = 3")
    cdc_sql(f"DELETE FROM `{sb}`.items WHERE id = 4")
    again, io = stream_of(config, bq_env.endpoint, tmp_path / "w")     # both: a is merged
    try:
        again.open()
        assert again.snapshot_new() == []
        again.run(blocking=False)          # no PositionLost: each reads from its recent position
    finally:
        io.close()
    assert bq_rows(bq_client, db, "items") == source_rows(cdc_sql, sb, "items", "id, v, n")
    assert bq_rows(bq_client, da, "items") == source_rows(cdc_sql, sa, "items", "id, v, n")
