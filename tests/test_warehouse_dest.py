"""The warehouse destination's SQL, without BigQuery: every MERGE and delete is scoped to the
tenant's slice, and a concurrent-DML conflict is retried (the statements are idempotent)."""

import pytest

from hakobu.errors import LoadError
from hakobu.policy import tenant_bucket
from hakobu.types import ColumnInfo, column_spec
from resources.bigquery_client import BigQuerySettings
from resources.warehouse_dest import WarehouseDestination


class Job:
    num_dml_affected_rows = 3


@pytest.fixture
def dest(tmp_path, monkeypatch):
    d = WarehouseDestination(BigQuerySettings(endpoint="http://127.0.0.1:9"), "hakobu-test",
                             "dwh", "US", tmp_path, tenant="acme",
                             bucket=tenant_bucket("acme"), buckets=4000)
    d.statements = []

    def sql(query, params=(), table=None):
        d.statements.append(query)
        return Job()
    monkeypatch.setattr(d, "sql", sql)
    monkeypatch.setattr(d, "_load_staging",
                        lambda table, files, specs, run_id, stats, extra=(): f"stg_{run_id}")
    d.dropped = []
    monkeypatch.setattr(d, "drop_table", d.dropped.append)
    monkeypatch.setattr("resources.warehouse_dest.time.sleep", lambda s: None)
    monkeypatch.setattr(d, "list_tables", lambda prefixes: [])        # no pending slices
    monkeypatch.setattr("resources.warehouse_pending.acquire", lambda d, t: True)
    monkeypatch.setattr("resources.warehouse_pending.release", lambda d, t: None)
    return d


SPECS = [column_spec(ColumnInfo("id", "bigint", "bigint", False)),
         column_spec(ColumnInfo("email", "varchar", "varchar(64)", True))]
EXTRA = [("tenant_id", "STRING"), ("_hakobu_tenant_bucket", "INT64")]


def test_merge_is_scoped_to_the_tenant_in_on_and_in_the_delete(dest):
    scope = f"T.`tenant_id` = 'acme' AND T.`_hakobu_tenant_bucket` = {tenant_bucket('acme')}"
    dest.merge("members", [], SPECS, ["tenant_id", "id"], extra=EXTRA, delete_scope="TRUE",
               run_id="r1")
    merge = next(s for s in dest.statements if s.startswith("MERGE"))
    assert f" S ON {scope} AND T.`tenant_id` = S.`tenant_id` AND T.`id` = S.`id`" in merge
    assert merge.endswith(f"WHEN NOT MATCHED BY SOURCE AND ({scope} AND (TRUE)) THEN DELETE")
    assert "stg_acme_r1" in merge                      # staging tables carry the tenant
    assert dest.dropped == ["stg_acme_r1"]             # and are deleted after the MERGE
    dest.statements.clear()
    dest.swap_slice("members", "shadow", ["id", "email", "tenant_id"], ["tenant_id", "id"])
    [swap] = dest.statements
    assert f"ON {scope} AND" in swap and swap.endswith(f"AND {scope} THEN DELETE")
    assert dest.ref("_hakobu_state") == "`hakobu-test.dwh._hakobu_state_acme`"


def test_a_concurrent_dml_conflict_is_retried_other_errors_are_not(dest, monkeypatch):
    calls = []

    def flaky(query, params=(), table=None):
        calls.append(query)
        if len(calls) == 1:
            raise LoadError("BigQuery query failed: Could not serialize access to table "
                            "dwh.members due to concurrent update")
        return Job()
    monkeypatch.setattr(dest, "sql", flaky)
    assert dest.swap_slice("members", "shadow", ["id"], ["tenant_id", "id"]) == 3
    assert len(calls) == 2
    monkeypatch.setattr(dest, "sql", lambda *a, **k: (_ for _ in ()).throw(
        LoadError("Syntax error")))
    with pytest.raises(LoadError, match="Syntax error"):
        dest.replace_slice("members", [], SPECS, EXTRA, run_id="r")


def test_invalid_tenant_ids_cannot_reach_sql(tmp_path):
    with pytest.raises(ValueError):
        WarehouseDestination(BigQuerySettings(endpoint="http://127.0.0.1:9"), "hakobu-test",
                             "dwh", "US", tmp_path, tenant="x' OR TRUE --", bucket=1,
                             buckets=4000)


# -- policy changes on the shared table: markers, generations, refills ----------------------------

from hakobu.bqschema import BqType, LiveColumn  # noqa: E402
from hakobu.markers import LEGACY_GEN, column_forms, marker, needs_refill, parse_marker  # noqa: E402
from hakobu.state import Watermark  # noqa: E402


def col(name, type_="STRING", form=None, gen="a1b2c3d4"):
    return LiveColumn(name, BqType.parse(type_), marker(form, gen) if form else None)


def test_markers_round_trip_and_say_what_the_column_holds():
    text = marker("hmac", "3f9a2c1b")
    assert parse_marker(text) == ("hmac", "3f9a2c1b") and "HMAC-SHA256" in text
    assert parse_marker(marker("clear", LEGACY_GEN)) == ("clear", LEGACY_GEN)
    assert parse_marker(None) is None and parse_marker("an analyst's note") is None


def test_column_forms_finds_columns_in_the_other_form_and_unmarked_ones():
    live = {"id": col("id", "INT64", "clear"), "email": col("email", form="clear"),
            "phone": col("phone", form="hmac"), "birthday": col("birthday", "DATE"),
            "name": col("name")}
    reform, unmarked = column_forms(live, {"id": "clear", "email": "hmac", "phone": "clear",
                                           "birthday": "hmac", "name": "clear", "new": "clear"})
    assert reform == {"email": "hashed", "phone": "unhashed"}
    assert unmarked == {"birthday": "hmac", "name": "clear"}


def test_needs_refill_when_a_column_was_created_again_since_the_slice_was_filled():
    gens = {"id": "g0000001", "email": "g0000002"}
    filled = Watermark(("k",), 3, columns=dict(gens))
    assert needs_refill(None, gens, []) is None                 # a first load reads it all
    assert needs_refill(filled, gens, []) is None
    assert "email" in needs_refill(filled, gens, ["email"])     # this run re-created it
    # another tenant's run dropped and re-added email (newly hashed): a new generation
    assert "email" in needs_refill(filled, {**gens, "email": "g0000009"}, [])
    # a column the slice never had (excluded by this tenant until now)
    assert "phone" in needs_refill(filled, {**gens, "phone": "g0000003"}, [])
    # watermarks written before generations existed: fine for adopted columns only
    legacy = Watermark(("k",), 3)
    assert needs_refill(legacy, {"id": LEGACY_GEN, "email": LEGACY_GEN}, []) is None
    assert "email" in needs_refill(legacy, {"id": LEGACY_GEN, "email": "g0000002"}, [])
    assert Watermark.from_json(filled.to_json(), 3).columns == gens
    assert Watermark.from_json(legacy.to_json(), 3).columns is None


class Tables:
    """A fake tables.get for the shared-table evolution: the columns the DDL left."""

    def __init__(self, dest, columns: dict, rows=None):
        self.cols, self.rows_answer = dict(columns), rows or {}
        dest.columns = lambda table: {k: v for k, v in self.cols.items()} if table == "members" \
            else None
        dest.rows = lambda q, params=(): [self.rows_answer.get("count", {"n": 0})] \
            if "REGEXP" in q else [self.rows_answer.get("slice", {"c0": 0})]
        dest.list_tables = lambda prefixes: []


def test_newly_hashed_column_is_dropped_for_everyone_and_re_added_empty(dest):
    Tables(dest, {"id": col("id", "INT64", "clear"), "email": col("email", form="clear"),
                  "birthday": col("birthday", "DATE", "clear"),
                  "tenant_id": col("tenant_id"), "_hakobu_tenant_bucket": col(
                      "_hakobu_tenant_bucket", "INT64"),
                  "_hakobu_synced_at": col("_hakobu_synced_at", "TIMESTAMP")})
    specs = [SPECS[0], SPECS[1]]
    evo = dest.ensure_table("members", specs, ["tenant_id", "id"], extra=EXTRA,
                            remove=lambda n, t=None: {"birthday": "drop_columns"}.get(n),
                            forms={"id": "clear", "email": "hmac"})
    alters = [s for s in dest.statements if s.startswith("ALTER")]
    ref = "`hakobu-test.dwh.members`"
    assert f"ALTER TABLE {ref} DROP COLUMN IF EXISTS `email`" in alters
    assert f"ALTER TABLE {ref} DROP COLUMN IF EXISTS `birthday`" in alters
    [add] = [s for s in alters if "ADD COLUMN" in s]
    assert add.startswith(f"ALTER TABLE {ref} ADD COLUMN IF NOT EXISTS `email` STRING OPTIONS("
                          "description='hakobu form=hmac gen=")
    assert evo.rehashed == {"email": "hashed"} and evo.removed == {"birthday": "drop_columns"}
    assert evo.changed == ["email"]
    assert not any(s.startswith("UPDATE") for s in dest.statements)


def test_excluded_column_loses_this_tenants_values_only_and_only_when_it_has_some(dest):
    tables = Tables(dest, {"id": col("id", "INT64", "clear"), "email": col("email", form="clear"),
                           "note": col("note", form="clear")}, rows={"slice": {"c0": 2}})
    evo = dest.ensure_table("members", SPECS, ["tenant_id", "id"], extra=EXTRA,
                            remove=lambda n, t=None: None, forms={"id": "clear", "email": "clear"},
                            slice_remove={"note": "excluded in the tenant file"}.get)
    scope = f"T.`tenant_id` = 'acme' AND T.`_hakobu_tenant_bucket` = {tenant_bucket('acme')}"
    [update] = [s for s in dest.statements if s.startswith("UPDATE")]
    assert update == f"UPDATE `hakobu-test.dwh.members` T SET `note` = NULL WHERE {scope}"
    assert evo.cleared == {"note": "excluded in the tenant file"}
    assert not any("DROP COLUMN" in s for s in dest.statements)   # other tenants keep theirs
    dest.statements.clear()
    tables.rows_answer = {"slice": {"c0": 0}}
    evo = dest.ensure_table("members", SPECS, ["tenant_id", "id"], extra=EXTRA,
                            forms={"id": "clear", "email": "clear"},
                            slice_remove={"note": "excluded in the tenant file"}.get)
    assert evo.cleared == {} and not any(s.startswith("UPDATE") for s in dest.statements)


def test_unmarked_columns_are_adopted_once_after_checking_a_hashed_one(dest):
    tables = Tables(dest, {"id": col("id", "INT64"), "email": col("email")},
                    rows={"count": {"n": 0}})
    evo = dest.ensure_table("members", SPECS, ["tenant_id", "id"], extra=EXTRA,
                            forms={"id": "clear", "email": "hmac"})
    assert evo.adopted == {"email": "hmac"} and evo.rehashed == {}
    [mark] = [s for s in dest.statements if "SET OPTIONS" in s]     # none for clear columns
    assert "ALTER COLUMN `email` SET OPTIONS(description='hakobu form=hmac gen=legacy00" in mark
    dest.statements.clear()
    tables.rows_answer = {"count": {"n": 5}}          # clear values left in it: rehash
    evo = dest.ensure_table("members", SPECS, ["tenant_id", "id"], extra=EXTRA,
                            forms={"id": "clear", "email": "hmac"})
    assert evo.rehashed == {"email": "hashed"}


# -- pending slices: which slices count, and the one MERGE ------------------------------------

from resources import warehouse_pending as wp  # noqa: E402


def pend(tenant, seq, kind="upsert", cols=("id", "email", "tenant_id", "_hakobu_tenant_bucket")):
    return wp.Pending(f"p_{tenant}_{seq}", "members", tenant, tenant_bucket(tenant), seq, kind,
                      {c: (c, "STRING" if c != "id" else "INT64") for c in (*cols, "_hakobu_seq")})


def test_a_complete_slice_hides_the_same_tenants_older_slices_only():
    ps = [pend("a", 1), pend("a", 2, "full"), pend("a", 3), pend("b", 1), pend("b", 4)]
    live, complete = wp.live_slices(ps)
    assert sorted((p.tenant, p.seq) for p in live) == [("a", 2), ("a", 3), ("b", 1), ("b", 4)]
    assert {t: p.seq for t, p in complete.items()} == {"a": 2}


def test_the_merge_keeps_the_newest_row_per_key_and_deletes_only_in_complete_slices():
    target = {c: (c, t) for c, t in (("id", "INT64"), ("email", "STRING"), ("phone", "STRING"),
                                     ("tenant_id", "STRING"), ("_hakobu_tenant_bucket", "INT64"),
                                     ("_hakobu_synced_at", "TIMESTAMP"))}
    ps = [pend("a", 1), pend("a", 2, "full"), pend("b", 5)]
    live, complete = wp.live_slices(ps)
    sql = wp.merge_sql(lambda t: f"`d.{t}`", "members", target, ["tenant_id", "id"], live,
                       complete, set())
    assert sql.count("MERGE ") == 1 and "p_a_1" not in sql          # superseded by a's full
    assert "PARTITION BY `tenant_id`, `id` ORDER BY `_hakobu_pseq` DESC, `_hakobu_seq` DESC" in sql
    assert "2 AS `_hakobu_pseq`" in sql and "5 AS `_hakobu_pseq`" in sql
    assert "CAST(NULL AS STRING) AS `phone`" in sql                 # a column no slice has
    buckets = sorted({tenant_bucket("a"), tenant_bucket("b")})
    assert f"T.`_hakobu_tenant_bucket` IN ({', '.join(map(str, buckets))})" in sql
    # the delete of vanished rows: a's partition and tenant only, never b's
    assert sql.endswith(f"WHEN NOT MATCHED BY SOURCE AND ((T.`tenant_id` = 'a' AND "
                        f"T.`_hakobu_tenant_bucket` = {tenant_bucket('a')})) THEN DELETE")
    upserts = wp.merge_sql(lambda t: f"`d.{t}`", "members", target, ["tenant_id", "id"],
                           [pend("b", 5)], {}, set())
    assert "NOT MATCHED BY SOURCE" not in upserts                   # upserts delete nothing
    replace = wp.merge_sql(lambda t: f"`d.{t}`", "events", target, [], [pend("a", 7, "replace")],
                           {"a": pend("a", 7, "replace")}, set())
    assert " ON FALSE " in replace and "ROW_NUMBER" not in replace   # no key: every row


def test_pending_names_carry_kind_sequence_and_tenant():
    name = wp.pending_prefix("members") + "f1796197990909371991_shop_12"
    assert wp.parse_name(name) == (wp.tag("members"), "full", 1796197990909371991, "shop_12")
    assert wp.parse_name(wp.pending_prefix("members") + "x1_a") is None
    assert wp.parse_name("_hakobu_stg_members_1") is None
    assert wp.pending_prefix("a") != wp.pending_prefix("a_b")
