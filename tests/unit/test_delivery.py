"""Delivery on fakes: the engine's logic (passes, watermarks, crash safety, isolation, backfill)
against a scripted source and an in-memory dataset. Each test can fail: it compares what the
destination holds with what the source holds, value by value."""

import datetime as dt
from decimal import Decimal

import pytest

from hakobu.backfill import ReconcileError, backfill_tenant
from hakobu.errors import LoadError
from hakobu.results import Hooks
from hakobu.sync import sync_tenant
from tests.fakes.source import col

T0 = dt.datetime(2026, 11, 30, 9, 0, 0)
ORDERS = [col("id", "int", nullable=False), col("amount", "decimal", column_type="decimal(10,2)",
                                                 precision=10, scale=2),
          col("note", "varchar", column_type="varchar(50)"),
          col("updated_at", "datetime", column_type="datetime(6)", datetime_precision=6)]
TABLES = "- name: orders\n  cursor: updated_at\n  chunk_rows: 3\n"


def order(i: int, minutes: int = 0, amount: str = "1.00", note: str = "x") -> dict:
    return {"id": i, "amount": Decimal(amount), "note": note,
            "updated_at": T0 + dt.timedelta(minutes=minutes)}


def seed(src, n: int = 10, schema: str = "s1"):
    src.add_table(schema, "orders", ORDERS, ["id"], {"ix_upd": ["updated_at", "id"]},
                  [order(i, minutes=i) for i in range(1, n + 1)])


def delivered(io, dataset: str = "d1", table: str = "orders") -> dict:
    dest = io.datasets[f"unit-proj.{dataset}"]
    return {r["id"]: (r["amount"], r["note"], r["updated_at"]) for r in dest.rows_of(table)}


def source_rows(src, schema: str = "s1") -> dict:
    return {r["id"]: (r["amount"], r["note"], r["updated_at"])
            for r in src.table(schema, "orders").rows}


@pytest.fixture
def config(make_config):
    return make_config({"a": ("s1", "d1", TABLES)})


def test_first_load_then_only_changed_rows(fake_source, fake_io, config):
    seed(fake_source)
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "initial" and r.rows_read == 10
    assert delivered(fake_io) == source_rows(fake_source)

    fake_source.upsert("s1", "orders", order(4, minutes=60, amount="9.99", note="changed"))
    fake_source.upsert("s1", "orders", order(11, minutes=61))
    fake_source.now += dt.timedelta(hours=2)
    fake_source.reads.clear()
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "incremental"
    assert sum(n for _, p, n in fake_source.reads if p == "main") == 2   # only what changed
    assert delivered(fake_io) == source_rows(fake_source)
    assert delivered(fake_io)[4] == (Decimal("9.99"), "changed", T0 + dt.timedelta(minutes=60))


def test_rows_at_or_after_the_bound_wait_for_the_next_run(fake_source, fake_io, config):
    seed(fake_source, 5)
    fake_source.now = T0 + dt.timedelta(minutes=3)      # rows 3.. are not below the bound yet
    sync_tenant(config, "a", io=fake_io)
    assert sorted(delivered(fake_io)) == [1, 2]
    fake_source.now = T0 + dt.timedelta(hours=1)
    sync_tenant(config, "a", io=fake_io)
    assert delivered(fake_io) == source_rows(fake_source)


@pytest.mark.parametrize("point", ["after_chunk", "before_merge", "after_merge",
                                   "before_watermark"])
def test_a_crash_anywhere_then_a_rerun_leaves_the_destination_equal(fake_source, fake_io,
                                                                    config, point):
    seed(fake_source, 10)
    sync_tenant(config, "a", io=fake_io)
    for i in (2, 5, 8):
        fake_source.upsert("s1", "orders", order(i, minutes=100 + i, note=f"v{i}"))
    fake_source.now += dt.timedelta(hours=3)

    def crash(**info):
        raise KeyboardInterrupt(point)             # not an Exception: the run itself dies

    with pytest.raises(KeyboardInterrupt):
        sync_tenant(config, "a", io=fake_io, hooks=Hooks(**{point: crash}))
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok
    got = delivered(fake_io)
    assert got == source_rows(fake_source)
    assert len(fake_io.datasets["unit-proj.d1"].tables["orders"]) == 10          # none doubled


def test_a_watermark_moved_by_another_run_fails_the_table_and_keeps_the_data(fake_source,
                                                                             fake_io, config):
    seed(fake_source, 4)
    sync_tenant(config, "a", io=fake_io)
    fake_source.upsert("s1", "orders", order(1, minutes=50, note="new"))
    fake_source.now += dt.timedelta(hours=1)
    dest = fake_io.datasets["unit-proj.d1"]
    dest.fail_on["write_watermark"] = LoadError("the watermark was moved by another run")
    [r] = sync_tenant(config, "a", io=fake_io)
    assert not r.ok and "watermark" in r.error
    assert delivered(fake_io)[1][1] == "new"                # merged rows stay delivered
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and delivered(fake_io) == source_rows(fake_source)


def test_a_table_without_cursor_is_read_whole_and_loses_deleted_rows(fake_source, fake_io,
                                                                     make_config):
    seed(fake_source, 6)
    config = make_config({"a": ("s1", "d1", "- name: orders\n  chunk_rows: 4\n")})
    sync_tenant(config, "a", io=fake_io)
    fake_source.delete("s1", "orders", id=3)
    fake_source.upsert("s1", "orders", order(6, note="edited"))
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "full"
    assert delivered(fake_io) == source_rows(fake_source)
    assert 3 not in delivered(fake_io)


def test_a_keyless_table_is_replaced_whole(fake_source, fake_io, make_config):
    fake_source.add_table("s1", "log", [col("msg", "varchar", column_type="varchar(20)")], [],
                          rows=[{"msg": "a"}, {"msg": "b"}])
    config = make_config({"a": ("s1", "d1", "- name: log\n  without_primary_key: replace\n")})
    sync_tenant(config, "a", io=fake_io)
    fake_source.table("s1", "log").rows = [{"msg": "c"}]
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "replace"
    assert [x["msg"] for x in fake_io.datasets["unit-proj.d1"].rows_of("log")] == ["c"]


def test_a_shared_table_delivers_each_tenant_only_its_own_rows(fake_source, fake_io,
                                                               make_config):
    cols = [col("tenant_id", "int", nullable=False), *ORDERS]
    rows = [{**order(i, minutes=i), "tenant_id": 1 + i % 2} for i in range(1, 11)]
    fake_source.add_table("shared", "orders", cols, ["tenant_id", "id"],
                          {"ix": ["tenant_id", "updated_at", "id"]}, rows)
    src = "  tenant_column: tenant_id\n  tenant_value: {v}\n"
    config = make_config({"a": ("shared", "da", TABLES, src.format(v=1)),
                          "b": ("shared", "db", TABLES, src.format(v=2))})
    sync_tenant(config, "a", io=fake_io)
    sync_tenant(config, "b", io=fake_io)
    for ds, v in (("da", 1), ("db", 2)):
        got = fake_io.datasets[f"unit-proj.{ds}"].rows_of("orders")
        assert {r["id"] for r in got} == {r["id"] for r in rows if r["tenant_id"] == v}
        assert {r["tenant_id"] for r in got} == {v}


def test_one_tables_failure_is_its_result_and_the_others_deliver(fake_source, fake_io,
                                                                 make_config):
    seed(fake_source, 3)
    config = make_config({"a": ("s1", "d1", TABLES + "- name: missing\n")})
    results = {r.table: r for r in sync_tenant(config, "a", io=fake_io)}
    assert results["orders"].ok and delivered(fake_io) == source_rows(fake_source)
    assert not results["missing"].ok and "does not exist" in results["missing"].error


def test_a_declared_key_that_is_not_unique_is_refused_before_anything_is_written(
        fake_source, fake_io, make_config):
    fake_source.add_table("s1", "orders", ORDERS, [], {"ix_upd": ["updated_at", "id"]},
                          [order(1), order(1, minutes=5), order(2)])
    config = make_config({"a": ("s1", "d1", TABLES + "  primary_key: [id]\n")})
    [r] = sync_tenant(config, "a", io=fake_io)
    assert not r.ok and "not unique" in r.error
    assert fake_io.datasets["unit-proj.d1"].tables.get("orders") in (None, [])


def test_backfill_reloads_through_a_shadow_and_sets_the_watermark(fake_source, fake_io, config):
    seed(fake_source, 7)
    sync_tenant(config, "a", io=fake_io)
    dest = fake_io.datasets["unit-proj.d1"]
    dest.tables["orders"][0]["note"] = "stale"              # drift a backfill must undo
    fake_source.delete("s1", "orders", id=7)
    [r] = backfill_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "backfill"
    assert delivered(fake_io) == source_rows(fake_source)
    assert ("swap_in", "orders") in dest.jobs
    assert not [t for t in dest.schemas if t.startswith("_hakobu_shadow_")]
    assert dest.read_watermark("orders").key[1] == 6


def test_a_backfill_whose_shadow_lost_rows_swaps_nothing(fake_source, fake_io, config,
                                                         monkeypatch):
    seed(fake_source, 5)
    sync_tenant(config, "a", io=fake_io)
    dest = fake_io.datasets["unit-proj.d1"]
    before = delivered(fake_io)
    real = dest.count
    monkeypatch.setattr(dest, "count", lambda t: real(t) - 1)   # a shadow short of one row
    [r] = backfill_tenant(config, "a", io=fake_io)
    assert not r.ok and "shadow holds" in r.error
    assert delivered(fake_io) == before and ("swap_in", "orders") not in dest.jobs
    assert isinstance(ReconcileError("x"), LoadError)
