"""A run's watermark moves and notes go in one statement per dataset (hold_watermarks /
flush_state), still compare-and-set per table, still crash-safe. Through the strict layer, so
the state tables' write counts are BigQuery's own count of statements that wrote them.

Schemas and datasets are prefixed `hk_wh_` (the warehouse tests' fixtures)."""

import pytest

from hakobu.errors import LoadError
from hakobu.results import Hooks
from hakobu.state import Watermark
from tests.integration.test_warehouse import (KEY, KEY_ENV, MEMBERS, datasets,  # noqa: F401
                                              make_members, warehouse_yaml, wh_config, wh_schema)
from tests.live import destination_for, live_io, sync_tenant, verify_tenant

TABLES = ["members", "m2", "m3"]


def _writes(layer, dataset: str, table: str) -> int:
    return sum(s["writes_total"] for t, s in layer.stats()["tables"].items()
               if t.endswith(f"{dataset}.{table}"))


@pytest.fixture
def three_tables(sql, wh_schema, datasets, wh_config, monkeypatch):   # noqa: F811
    monkeypatch.setenv(KEY_ENV, KEY)
    make_members(sql, wh_schema, 200)
    for t in TABLES[1:]:
        sql(f"CREATE TABLE `{wh_schema}`.{t} LIKE `{wh_schema}`.members")
        sql(f"INSERT INTO `{wh_schema}`.{t} SELECT * FROM `{wh_schema}`.members")
    wh, cust = datasets(), datasets()
    body = "".join(MEMBERS.format(chunk=1000, extra="").replace("members", t) for t in TABLES)
    cfg = wh_config({"a": (wh_schema, cust, body)}, warehouse_yaml(wh))
    return cfg, wh_schema, cust, wh


def assert_equal(cfg) -> None:
    """Both datasets equal the source, value by value (`hakobu verify`)."""
    verdicts = verify_tenant(cfg, "a")
    assert len(verdicts) == 2 * len(TABLES) and all(v.equal for v in verdicts), verdicts


def test_one_state_statement_per_dataset_per_run(three_tables, strict_env, sql):
    cfg, schema, cust, wh = three_tables
    assert all(r.ok for r in sync_tenant(cfg, "a", verify=True, merge_warehouse=False))
    for t in TABLES:
        sql(f"UPDATE `{schema}`.{t} SET email = CONCAT('n', email), updated_at = NOW(6) "
            "WHERE id <= 5")
    cust_before = _writes(strict_env, cust, "_hakobu_state")
    wh_before = _writes(strict_env, wh, "_hakobu_state_a")
    res = sync_tenant(cfg, "a", verify=True, merge_warehouse=False)
    assert all(r.ok for r in res) and all(r.rows_read >= 5 for r in res), res
    # three tables moved their watermarks in each dataset: one statement each, not three
    assert _writes(strict_env, cust, "_hakobu_state") - cust_before == 1
    assert _writes(strict_env, wh, "_hakobu_state_a") - wh_before == 1
    dest = destination_for(cfg.tenant("a"))
    for t in TABLES:
        wm = dest.read_watermark(t)
        assert wm is not None and wm.version == 2, (t, wm)
    assert_equal(cfg)
    # the moved watermarks hold: a third run reads nothing new
    again = sync_tenant(cfg, "a", merge_warehouse=False)
    assert [r.rows_read for r in again] == [0, 0, 0]


def test_held_moves_are_still_compare_and_set(three_tables, strict_env):
    cfg, schema, cust, wh = three_tables
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))
    mine, other = (live_io().customer(cfg.tenant("a")) for _ in range(2))
    mine.prefetch_watermarks(TABLES)
    mine.hold_watermarks()
    base = {t: mine.read_watermark(t) for t in TABLES}
    for t in TABLES:
        mine.write_watermark(t, Watermark(base[t].key, 0, base[t].rows_total + 1, None),
                             base[t], "run-mine")
    assert mine.read_watermark("m2").rows_total == base["m2"].rows_total + 1   # held, seen
    assert other.read_watermark("m2").version == base["m2"].version          # not written yet
    # meanwhile another run moves m2
    other.write_watermark("m2", Watermark(base["m2"].key, 0, 7, None), base["m2"], "run-other")
    with pytest.raises(LoadError, match="m2") as err:
        mine.flush_state()
    assert "members" not in str(err.value) and "m3" not in str(err.value)
    now = {t: other.read_watermark(t) for t in TABLES}
    assert now["m2"].rows_total == 7                       # the other run's move stands
    for t in ("members", "m3"):                            # ours were written
        assert now[t].version == base[t].version + 1
        assert now[t].rows_total == base[t].rows_total + 1


def test_a_failing_table_does_not_lose_the_others_moves(three_tables, strict_env, sql):
    cfg, schema, cust, wh = three_tables
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))
    for t in TABLES:
        sql(f"UPDATE `{schema}`.{t} SET phone = 'x', updated_at = NOW(6) WHERE id <= 3")

    def before_merge(table=None, sink=None, **_):
        if table == "m3":
            raise RuntimeError("planted failure inside m3")
    res = {r.table: r for r in sync_tenant(cfg, "a", merge_warehouse=False,
                                           hooks=Hooks(before_merge=before_merge))}
    assert not res["m3"].ok and res["members"].ok and res["m2"].ok
    dest = destination_for(cfg.tenant("a"))
    assert dest.read_watermark("members").version == 2
    assert dest.read_watermark("m3").version == 1          # not moved: its rows were not merged
    rerun = {r.table: r for r in sync_tenant(cfg, "a", merge_warehouse=False)}
    assert rerun["members"].rows_read == 0 and rerun["m3"].rows_read >= 3
    assert_equal(cfg)
