"""Type changes and table evolution of the BigQuery destination, pure: what happens to a target
column when the source's type changes (issue #11 item 11), decided from (the BigQuery column
type with its parameters, the new spec) without BigQuery.

The emulator stores decimals as DuckDB DECIMAL(38 digits at most), so the BIGNUMERIC cases wider
than 38 digits are verified here only; tests/integration/test_type_changes.py runs the in-place
path on the emulator for what it can hold."""

import pytest
from google.cloud import bigquery

from hakobu.types import ColumnInfo, column_spec
from hakobu.bqschema import BqType, Evolution, LiveColumn, plan_evolution, supertype, type_change


def spec_type(data_type: str, column_type: str, p=None, s=None) -> BqType:
    """The BigQuery type hakobu's contract gives a MySQL column."""
    return BqType.parse(column_spec(ColumnInfo("c", data_type, column_type, True, p, s)).bq_type)


def decide(have: str, want: BqType | str, shared=False):
    want = BqType.parse(want) if isinstance(want, str) else want
    return type_change(BqType.parse(have), want, shared=shared)


def test_parse_and_render():
    assert BqType.parse("NUMERIC(12, 4)") == BqType("NUMERIC", 12, 4)
    assert BqType.parse("numeric(20)") == BqType("NUMERIC", 20, 0)
    assert BqType.parse("INTEGER") == BqType("INT64") and BqType.parse("BOOLEAN").name == "BOOL"
    assert str(BqType("BIGNUMERIC", 65, 30)) == "BIGNUMERIC(65, 30)"
    assert str(BqType("NUMERIC", 20, 0)) == "NUMERIC(20)" and str(BqType("NUMERIC")) == "NUMERIC"
    f = bigquery.SchemaField("a", "NUMERIC", precision=12, scale=4)
    assert BqType.of_field(f) == BqType("NUMERIC", 12, 4)
    assert BqType.of_field(bigquery.SchemaField("a", "BIGNUMERIC")) == BqType("BIGNUMERIC")
    assert BqType.of_field(bigquery.SchemaField("a", "INTEGER")) == BqType("INT64")
    with pytest.raises(ValueError):
        BqType.parse("NUMERIC(12, 4")


@pytest.mark.parametrize("have, mysql, action, to", [
    # DECIMAL(10,2) -> (12,4): the column is widened in place, 1.2345 is never stored as 1.23
    ("NUMERIC(10, 2)", ("decimal", "decimal(12,4)", 12, 4), "widen", "NUMERIC(12, 4)"),
    ("NUMERIC(10, 2)", ("decimal", "decimal(11,2)", 11, 2), "widen", "NUMERIC(11, 2)"),
    ("NUMERIC(10, 2)", ("decimal", "decimal(10,2)", 10, 2), "keep", None),
    # NUMERIC -> BIGNUMERIC, incl. wider than the emulator's 38 digits
    ("NUMERIC(20, 4)", ("decimal", "decimal(30,10)", 30, 10), "widen", "BIGNUMERIC(30, 10)"),
    ("NUMERIC(38, 9)", ("decimal", "decimal(65,30)", 65, 30), "widen", "BIGNUMERIC(65, 30)"),
    ("BIGNUMERIC(40, 10)", ("decimal", "decimal(65,30)", 65, 30), "widen", "BIGNUMERIC(65, 30)"),
    ("NUMERIC(20)", ("decimal", "decimal(40,0)", 40, 0), "widen", "BIGNUMERIC(40)"),
    # BIGINT UNSIGNED (NUMERIC(20)) -> DECIMAL(25,0)
    ("NUMERIC(20)", ("decimal", "decimal(25,0)", 25, 0), "widen", "NUMERIC(25)"),
    # narrower: MySQL rounded the rows it holds, BigQuery did not
    ("NUMERIC(12, 4)", ("decimal", "decimal(10,2)", 10, 2), "refuse", None),
    ("NUMERIC(12, 4)", ("decimal", "decimal(12,2)", 12, 2), "refuse", None),   # scale down
    ("NUMERIC(12, 4)", ("decimal", "decimal(10,4)", 10, 4), "refuse", None),   # digits down
    ("BIGNUMERIC(65, 30)", ("decimal", "decimal(38,9)", 38, 9), "refuse", None),
    ("BIGNUMERIC(40, 12)", ("decimal", "decimal(20,4)", 20, 4), "refuse", None),
    # other families: refused even where BigQuery would coerce
    ("INT64", ("bigint", "bigint(20) unsigned"), "refuse", None),     # INT -> BIGINT UNSIGNED
    ("INT64", ("decimal", "decimal(10,2)", 10, 2), "refuse", None),   # INT -> DECIMAL
    ("FLOAT64", ("decimal", "decimal(10,2)", 10, 2), "refuse", None),  # FLOAT -> DECIMAL
    ("NUMERIC(10, 2)", ("double", "double"), "refuse", None),          # DECIMAL -> DOUBLE
    ("NUMERIC(10, 2)", ("varchar", "varchar(20)"), "refuse", None),
    ("BOOL", ("bit", "bit(9)"), "refuse", None),
    ("DATETIME", ("timestamp", "timestamp"), "refuse", None),
    # the same BigQuery type: nothing to do
    ("INT64", ("bigint", "bigint"), "keep", None),                      # INT -> BIGINT
    ("INT64", ("int", "int(10) unsigned"), "keep", None),
    ("STRING", ("text", "text"), "keep", None),                         # VARCHAR -> TEXT
    ("STRING", ("json", "json"), "keep", None),                         # the emulator's JSON
    ("DATETIME", ("datetime", "datetime(6)"), "keep", None),            # DATETIME(0) -> (6)
    ("FLOAT64", ("double", "double"), "keep", None),                    # FLOAT -> DOUBLE
])
def test_customer_column_type_change(have, mysql, action, to):
    change = decide(have, spec_type(*mysql))
    assert change.action == action, change
    assert (str(change.to) if change.to else None) == to
    if action == "refuse":
        assert change.why.startswith(f"BigQuery has {have}, source now gives ")


def test_unparameterised_columns_are_kept_when_they_hold_the_new_type():
    # a table rebuilt by CREATE ... AS SELECT (backfill swap) has no parameters on real BigQuery
    assert decide("NUMERIC", "NUMERIC(12, 4)").action == "keep"
    assert decide("NUMERIC", "NUMERIC(38, 9)").action == "keep"
    assert decide("BIGNUMERIC", "BIGNUMERIC(65, 30)").action == "keep"
    # ... and widened to the unparameterised BIGNUMERIC (holding both) when they do not
    change = decide("NUMERIC", "BIGNUMERIC(38, 10)")
    assert change.action == "widen" and change.to == BqType("BIGNUMERIC")


def test_a_shared_warehouse_column_holds_every_tenants_values():
    # another tenant still has DECIMAL(10,2): the wider column stays
    assert decide("NUMERIC(12, 4)", "NUMERIC(10, 2)", shared=True).action == "keep"
    # neither holds the other: widened to a type holding both
    change = decide("NUMERIC(12, 4)", "NUMERIC(12, 2)", shared=True)
    assert change.action == "widen" and change.to == BqType("NUMERIC", 14, 4)
    assert decide("BIGNUMERIC(40, 12)", "NUMERIC(30, 2)", shared=True).action == "keep"
    change = decide("BIGNUMERIC(40, 12)", "NUMERIC(31, 2)", shared=True)
    assert change.to == BqType("BIGNUMERIC", 41, 12)
    assert decide("NUMERIC(10, 2)", "NUMERIC(12, 4)", shared=True).to == BqType("NUMERIC", 12, 4)
    assert decide("INT64", "NUMERIC(20)", shared=True).action == "refuse"
    assert supertype(BqType("BIGNUMERIC", 76, 38), BqType("BIGNUMERIC", 76, 0)) is None


def live(**cols) -> dict:
    return {n.lower(): LiveColumn(n, BqType.parse(t)) for n, t in cols.items()}


def test_plan_evolution_adds_drops_by_policy_only_and_refuses_together():
    table = live(id="INT64", amount="NUMERIC(10, 2)", note="STRING", api_key="STRING",
                 legacy="STRING", _hakobu_synced_at="TIMESTAMP")
    columns = [("id", "INT64"), ("amount", "NUMERIC(12, 4)"), ("coupon", "STRING"),
               ("_hakobu_synced_at", "TIMESTAMP")]
    reasons = {"note": "excluded in the tenant file", "api_key": "credential-like"}
    plan = plan_evolution(table, columns, lambda n, t=None: reasons.get(n))
    assert plan.add == [("coupon", "STRING")]
    assert plan.drop == reasons                      # `legacy` (gone from MySQL) stays
    assert plan.widen == {"amount": (BqType("NUMERIC", 10, 2), BqType("NUMERIC", 12, 4))}
    assert plan.refused == []
    assert plan_evolution(table, columns, None).drop == {}
    bad = plan_evolution(live(id="INT64", a="NUMERIC(12, 4)", b="FLOAT64"),
                         [("id", "NUMERIC(20)"), ("a", "NUMERIC(10, 2)"), ("b", "FLOAT64")])
    assert [r.split(":")[0] for r in bad.refused] == ["id", "a"]


def test_evolution_metadata():
    evo = Evolution(removed={"note": "excluded in the tenant file"},
                    widened={"amount": ("NUMERIC(10, 2)", "NUMERIC(12, 4)")})
    md = evo.metadata()
    assert md["policy_columns_removed"] == "note (excluded in the tenant file)"
    assert md["columns_widened"] == "amount NUMERIC(10, 2) → NUMERIC(12, 4)"
    assert Evolution().metadata() == {"policy_columns_removed": "-", "columns_widened": "-"}
