"""Where a shared table's change goes (hakobu.realtime.Router): by exact equality of the tenant
column's value in the column's own type, as the nightly's byte-exact predicate selects. A
value nobody declared is dropped and counted, never routed by a guess, never an error."""

import datetime as dt

from hakobu.binlog import BinlogPosition, ChangeKind, RowChange
from hakobu.plan import TablePlan
from hakobu.realtime import Route, Router, _tv

POS = BinlogPosition(file="mysql-bin.000001", pos=4)
AT = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def plan(value, data_type: str) -> TablePlan:
    return TablePlan(tenant="t", schema="shared", table="items", specs=(), cursor=None, chunk_rows=1000,
                     primary_key=("id",), tenant_column="tenant", tenant_value=value,
                     tenant_type=data_type)


def change(value, kind=ChangeKind.INSERT) -> RowChange:
    return RowChange(schema="shared", table="items", kind=kind, row={"id": 1, "tenant": value},
                     before=None, primary_key=("id",), position=POS, committed_at=AT, seq=0)


def router(*declared) -> Router:
    return Router(Route(f"t{v!r}", "items", plan(v, t)) for v, t in declared)


def test_values_are_compared_exactly_never_guessed_from_text():
    assert _tv("１２") != _tv("12") and _tv("12") != _tv(12)
    r = router(("12", "varchar"))
    for stranger in ["１２", "012", "12 ", "+12", "²", "--5", 12]:
        assert r.route(change(stranger)) == [], stranger
    assert r.dropped[("shared", "items")] == 7
    [d] = r.route(change("12"))
    assert d.route.tenant == "t'12'"


def test_an_integer_tenant_column_routes_ints_only():
    r = router((12, "int"), (5, "int"))
    assert [d.route.tenant for d in r.route(change(12))] == ["t12"]
    assert [d.route.tenant for d in r.route(change(5))] == ["t5"]
    for stranger in ["12", "１２", "--5", "-5", -5, None, True]:
        assert r.route(change(stranger)) == [], stranger
    assert r.dropped[("shared", "items")] == 7


def test_a_binary_tenant_column_compares_bytes():
    r = router(("acme", "varbinary"))
    assert [d.route.tenant for d in r.route(change(b"acme"))] == ["t'acme'"]
    assert r.route(change("acme")) == [] and r.route(change(b"ACME")) == []
