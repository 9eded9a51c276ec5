"""The verification and repair logic on fakes (no database): key checksums, content digests, the
drill-down (missing / extra / changed / duplicated), both repairs, the rotation. The fakes render
both sides with one canonical-text function (tests/fakes/checks.py), so every DIFFERENT below is
a value really changed on one side — and each test corrupts one to see it."""

import datetime as dt
import json
from decimal import Decimal

import pytest

from hakobu.bucketing import Bucketing
from hakobu.checksums import compare_table, repair_deletes
from hakobu.errors import LoadError
from hakobu.plan import TablePlan
from hakobu.ports import DestinationChecks, SourceChecks
from hakobu.rotation import VerifyNote, night_slice
from hakobu.sinks import Sink
from hakobu.sync import sync_tenant
from hakobu.types import column_spec, to_dest
from hakobu.verify import compare_content, nightly_content, repair_content
from hakobu.bqschema import SYNCED_AT
from resources.bigquery_dest import BigQueryDestination
from resources.mysql_source import MySQLSource
from tests.fakes.checks import _batch
from tests.fakes.destination import InMemoryDestination as Dest
from tests.fakes.source import ScriptedSource as Source
from tests.fakes.source import col


ORDERS = [col("id", "bigint", column_type="bigint(20)", nullable=False),
          col("v", "varchar", column_type="varchar(20)"),
          col("amount", "decimal", column_type="decimal(10,2)", precision=10, scale=2),
          col("doc", "json"),
          col("f", "double"),
          col("updated_at", "datetime", column_type="datetime(6)", datetime_precision=6)]


def make_plan(columns, pk, table="orders", **kw) -> TablePlan:
    return TablePlan(tenant="t", schema="s", table=table,
                     specs=tuple(column_spec(c) for c in columns), primary_key=tuple(pk),
                     cursor="updated_at", chunk_rows=100, **kw)


def order(i: int) -> dict:
    return {"id": i, "v": f"v{i}", "amount": Decimal(i) / 4, "doc": json.dumps({"n": i}),
            "f": i / 3 if i % 5 else None,
            "updated_at": dt.datetime(2026, 1, 1) + dt.timedelta(minutes=i)}


def deliver(src: Source, dest: Dest, plan: TablePlan, table: str | None = None) -> None:
    """The source's rows as a delivery leaves them in the destination (to_dest's values)."""
    table = table or plan.bq_table
    dest.ensure_table(table, list(plan.specs), [plan.bq(k) for k in plan.primary_key])
    rows = to_dest(_batch(plan.specs, src.visible_rows(plan)), list(plan.specs)).to_pylist()
    dest.tables[table] = [{**r, SYNCED_AT: None} for r in rows]


def setup(n=300, columns=ORDERS, pk=("id",), rows=None, **kw):
    plan = make_plan(columns, pk, **kw)
    src, dest = Source(), Dest()
    src.add_table("s", plan.table, columns, list(pk), rows=rows or [order(i) for i in
                                                                     range(1, n + 1)])
    deliver(src, dest, plan)
    return src, dest, plan


def row_of(dest: Dest, table: str, **key) -> dict:
    [r] = [r for r in dest.tables[table] if all(r[k] == v for k, v in key.items())]
    return r


def sink(dest: Dest, plan: TablePlan) -> Sink:
    return Sink(dest, plan.bq_table, list(plan.specs), [plan.bq(k) for k in plan.primary_key])


# -- the ports ----------------------------------------------------------------------------------

def test_the_real_adapters_and_the_fakes_answer_the_same_ports():
    for proto, real, fake in ((SourceChecks, MySQLSource, Source),
                              (DestinationChecks, BigQueryDestination, Dest)):
        members = [m for m in vars(proto) if not m.startswith("_")]
        assert members
        for m in members:
            assert callable(getattr(real, m, None)), (real, m)
            assert callable(getattr(fake, m, None)), (fake, m)
    assert callable(MySQLSource.rows_by_keys) and callable(Source.rows_by_keys)


# -- key checksums ------------------------------------------------------------------------------

def test_keys_equal_then_a_deleted_source_row_is_found_and_repaired():
    src, dest, plan = setup()
    cmp = compare_table(src, dest, plan, bucket_rows=50)
    assert cmp.equal and cmp.bucketing.mode == "int", cmp.summary()
    assert cmp.source_rows == cmp.dest_rows == 300
    src.delete("s", "orders", id=77)
    dest.tables["orders"] = [r for r in dest.tables["orders"] if r["id"] != 150]   # lost
    cmp = compare_table(src, dest, plan, bucket_rows=50)
    assert not cmp.equal and cmp.buckets_differing == 2, cmp.summary()
    assert {d.bucket for d in cmp.differing} == {77 >> cmp.bucketing.shift,
                                                 150 >> cmp.bucketing.shift}
    rep = repair_deletes(src, dest, plan, cmp)
    assert (rep.rows_deleted, rep.rows_missing, rep.rows_merged) == (1, 1, 1)
    assert rep.source_rows_read == sum(d.source_rows for d in cmp.differing) < 300
    assert compare_table(src, dest, plan, bucket_rows=50).equal
    assert sorted(r["id"] for r in dest.tables["orders"]) == \
        sorted(r["id"] for r in src.visible_rows(plan))


def test_a_key_repair_refuses_to_delete_most_of_the_table():
    src, dest, plan = setup(n=40)
    for i in range(6, 41):
        src.delete("s", "orders", id=i)
    cmp = compare_table(src, dest, plan, bucket_rows=10)
    with pytest.raises(LoadError, match="refusing to delete"):
        repair_deletes(src, dest, plan, cmp)
    assert len(dest.tables["orders"]) == 40                          # nothing deleted
    rep = repair_deletes(src, dest, plan, cmp, max_delete_fraction=1.0)
    assert rep.rows_deleted == 35 and compare_table(src, dest, plan, bucket_rows=10).equal


@pytest.mark.parametrize("mode", ["hash", "prefix"])
def test_string_and_composite_keys(mode):
    if mode == "hash":
        cols = [col("code", "varchar", column_type="varchar(40)", nullable=False),
                col("v", "varchar", column_type="varchar(8)"),
                col("updated_at", "datetime", column_type="datetime")]
        rows = [{"code": f"c:{i}", "v": "x", "updated_at": dt.datetime(2026, 1, 1)}
                for i in range(200)]
        pk, gone = ("code",), {"code": "c:17"}
    else:
        cols = [col("order_id", "int", column_type="int(11)", nullable=False),
                col("line_no", "smallint", column_type="smallint(6)", nullable=False),
                col("v", "varchar", column_type="varchar(8)"),
                col("updated_at", "datetime", column_type="datetime")]
        rows = [{"order_id": i // 4, "line_no": i % 4, "v": "x",
                 "updated_at": dt.datetime(2026, 1, 1)} for i in range(800)]
        pk, gone = ("order_id", "line_no"), {"order_id": 7, "line_no": 2}
    src, dest, plan = setup(columns=cols, pk=pk, rows=rows, table="k")
    cmp = compare_table(src, dest, plan, bucket_rows=20)
    assert cmp.equal and cmp.bucketing.mode == mode, cmp.summary()
    src.delete("s", "k", **gone)
    cmp = compare_table(src, dest, plan, bucket_rows=20)
    assert cmp.buckets_differing == 1
    rep = repair_deletes(src, dest, plan, cmp)
    assert rep.rows_deleted == 1 and rep.source_index_passes == (mode == "hash")
    assert compare_table(src, dest, plan, bucket_rows=20).equal


def test_a_shared_table_compares_the_tenants_rows_only():
    cols = [col("tenant_id", "int", column_type="int(11)", nullable=False)] + ORDERS
    rows = [{**order(i), "tenant_id": t} for t in (3, 4) for i in range(1, 101)]
    src, dest, plan = setup(columns=cols, pk=("tenant_id", "id"), rows=rows,
                            tenant_column="tenant_id", tenant_value=4, tenant_type="int")
    assert len(dest.tables["orders"]) == 100                         # tenant 4's rows
    cmp = compare_table(src, dest, plan, bucket_rows=25)
    assert cmp.equal and cmp.bucketing.column == "id", cmp.summary()
    [r] = [r for r in src.visible_rows(plan) if r["id"] == 9]
    r["v"] = "changed"                                                 # tenant 4's row
    c = compare_content(src, dest, plan, bucketing=cmp.bucketing)
    assert [k[1] for k in c.changed] == [9] and c.changed[0][0] == 4


def test_a_table_without_key_compares_counts_only():
    src, dest, plan = setup(n=20, pk=())
    cmp = compare_table(src, dest, plan)
    assert cmp.bucketing.mode == "count" and cmp.equal
    dest.tables["orders"].pop()
    assert not compare_table(src, dest, plan).equal
    assert compare_content(src, dest, plan).skipped


# -- content: the drill-down --------------------------------------------------------------------

def test_content_equal_then_each_kind_of_difference_is_named():
    src, dest, plan = setup()
    b = compare_table(src, dest, plan, bucket_rows=50).bucketing
    assert compare_content(src, dest, plan, bucketing=b).equal
    row_of(dest, "orders", id=10)["v"] = "stale"                      # changed
    row_of(dest, "orders", id=11)["amount"] = Decimal("2.76")          # 2.75 rounded
    dest.tables["orders"] = [r for r in dest.tables["orders"] if r["id"] != 20]   # missing
    extra = dict(row_of(dest, "orders", id=30), id=1000)
    dest.tables["orders"].append(extra)                                # extra
    dest.tables["orders"].append(dict(row_of(dest, "orders", id=40)))  # duplicated
    dest.tables["orders"] += [dict(extra, id=2000), dict(extra, id=2000)]   # extra, twice
    c = compare_content(src, dest, plan, bucketing=b)
    assert not c.equal and "DIFFERENT" in c.summary()
    assert sorted(k[0] for k in c.changed) == [10, 11, 40]
    assert [k[0] for k in c.missing] == [20]
    assert sorted(c.extra) == ["4:1000", "4:2000"]
    assert sorted(c.duplicated) == ["2:40", "4:2000"]
    assert c.counts() == {"missing": 1, "extra": 2, "changed": 3, "duplicated": 2}
    assert sorted(c.differing) == sorted({x >> b.shift for x in (10, 11, 20, 40, 1000, 2000)})


@pytest.mark.parametrize("column, bad", [
    ("v", None), ("v", ""), ("amount", Decimal("0.01")), ("doc", '{"n": -1}'),
    ("updated_at", dt.datetime(2026, 1, 1, 0, 0, 0, 1)), ("f", None)])
def test_a_corrupted_value_of_each_type_is_found(column, bad):
    src, dest, plan = setup(n=50)
    b = compare_table(src, dest, plan, bucket_rows=10).bucketing
    row_of(dest, "orders", id=7)[column] = bad              # (f: 7/3 made NULL: NULL-ness)
    c = compare_content(src, dest, plan, bucketing=b)
    assert [k[0] for k in c.changed] == [7], (column, c.summary())


def test_a_float_is_compared_by_null_ness_only():
    src, dest, plan = setup(n=50)
    row_of(dest, "orders", id=7)["f"] = 99.5                # a value the digest cannot compare
    assert compare_content(src, dest, plan).equal


def test_json_printed_otherwise_is_equal():
    src, dest, plan = setup(n=50)
    row_of(dest, "orders", id=7)["doc"] = '{ "n" : 7 }'
    assert compare_content(src, dest, plan).equal
    row_of(dest, "orders", id=7)["doc"] = '{"n": 7.5}'
    assert not compare_content(src, dest, plan).equal


# -- content: repair ----------------------------------------------------------------------------

def test_content_repair_makes_every_kind_equal():
    src, dest, plan = setup()
    b = compare_table(src, dest, plan, bucket_rows=50).bucketing
    row_of(dest, "orders", id=10)["v"] = "stale"
    dest.tables["orders"] = [r for r in dest.tables["orders"] if r["id"] != 20]
    dest.tables["orders"].append(dict(row_of(dest, "orders", id=30), id=1000))
    dest.tables["orders"].append(dict(row_of(dest, "orders", id=40)))
    dest.tables["orders"] += [dict(row_of(dest, "orders", id=1), id=2000) for _ in range(2)]
    c = compare_content(src, dest, plan, bucketing=b)
    c = repair_content(src, dest, plan, sink(dest, plan), c, run_id="r1")
    assert c.repaired and "repaired" in c.summary(), c.summary()
    assert c.rows_deleted == 5 and c.rows_merged == 3   # 1000, 2000 twice, both 40s; 10, 20, 40
    assert compare_content(src, dest, plan, bucketing=b).equal
    assert sorted(r["id"] for r in dest.tables["orders"]) == list(range(1, 301))
    assert row_of(dest, "orders", id=10)["v"] == "v10"


def test_content_repair_refuses_to_delete_most_of_the_table():
    src, dest, plan = setup(n=10)
    for i in range(100, 130):
        dest.tables["orders"].append(dict(row_of(dest, "orders", id=1), id=i))
    c = compare_content(src, dest, plan)
    assert len(c.extra) == 30
    with pytest.raises(LoadError, match="refusing to delete 30 of 40"):
        repair_content(src, dest, plan, sink(dest, plan), c)
    assert len(dest.tables["orders"]) == 40


# -- the rotation -------------------------------------------------------------------------------

def test_night_slices_cover_every_bucket_once_per_rotation():
    b = Bucketing("int", column="id", shift=4)
    ids = set(range(20))
    seen = []
    for night in range(5):
        got, _ = night_slice(b, ids, 5, night, offset=2)
        seen += got
    assert sorted(seen) == sorted(ids)
    h = Bucketing("hash", modulus=20)
    whole = [night for night in range(5) if night_slice(h, ids, 5, night, 2)[0]]
    assert len(whole) == 1 and night_slice(h, ids, 5, whole[0], 2)[0] == sorted(ids)


def test_nightly_rotation_finds_and_repairs_on_the_slices_night_and_completes_a_pass():
    src, dest, plan = setup()
    plan_sink = sink(dest, plan)
    keys = compare_table(src, dest, plan, bucket_rows=20)
    bucket_of_77 = 77 >> keys.bucketing.shift
    row_of(dest, "orders", id=77)["v"] = "stale"
    found_on, note = [], None
    for night in range(1000, 1004):
        c, note = nightly_content(src, plan_sink, plan, keys, every=4, night=night, run_id="n")
        assert c.equal or c.repaired
        if c.repaired:
            found_on.append(night)
            assert bucket_of_77 in (c.buckets or [])
        again, _ = nightly_content(src, plan_sink, plan, keys, every=4, night=night)
        assert again.slice_desc == "already verified tonight"
    assert len(found_on) == 1 and row_of(dest, "orders", id=77)["v"] == "v77"
    assert isinstance(note, VerifyNote) and note.full_pass is not None, note
    assert VerifyNote.from_dict(dest.read_note("orders")) == note


def test_a_rotation_restarts_when_the_bucketing_changes():
    src, dest, plan = setup()
    plan_sink = sink(dest, plan)
    keys = compare_table(src, dest, plan, bucket_rows=20)
    _, note = nightly_content(src, plan_sink, plan, keys, every=4, night=2000)
    assert len(note.slices) == 1
    keys2 = compare_table(src, dest, plan, bucket_rows=40)
    assert keys2.bucketing != keys.bucketing
    _, note2 = nightly_content(src, plan_sink, plan, keys2, every=4, night=2001)
    assert len(note2.slices) == 1 and note2.bucketing == keys2.bucketing.describe()


# -- through the engine (hakobu.sync on tests/fakes/io.FakeIO) ----------------------------------

def test_the_nightly_run_repairs_a_hard_delete_and_a_stale_value(fake_source, fake_io,
                                                                 make_config):
    t0 = dt.datetime(2026, 11, 30, 9, 0, 0)
    cols = [c for c in ORDERS if c.name != "f"]
    fake_source.add_table("s1", "orders", cols, ["id"], {"ix_upd": ["updated_at", "id"]},
                          [{**{k: v for k, v in order(i).items() if k != "f"},
                            "updated_at": t0 + dt.timedelta(minutes=i)} for i in range(1, 41)])
    config = make_config({"a": ("s1", "d1", "- name: orders\n  cursor: updated_at\n"
                                            "  verify_every: 1\n")})
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "initial", r.error
    dest = fake_io.datasets["unit-proj.d1"]
    fake_source.delete("s1", "orders", id=7)                 # a hard delete: no cursor sees it
    row_of(dest, "orders", id=9)["v"] = "stale"               # a value lost on the way
    fake_source.now += dt.timedelta(hours=2)
    [r] = sync_tenant(config, "a", io=fake_io)
    assert r.ok and r.mode == "incremental", r.error
    assert r.extra["deletes_rows_deleted"] == 1
    assert r.check is not None and r.check.in_sync, r.check.summary()
    assert r.check.content.repaired and r.check.content.changed == [(9,)]
    assert sorted(x["id"] for x in dest.tables["orders"]) == [i for i in range(1, 41) if i != 7]
    assert row_of(dest, "orders", id=9)["v"] == "v9"
