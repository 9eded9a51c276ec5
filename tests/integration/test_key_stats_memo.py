"""The nightly key check sizes its buckets from remembered key stats (hakobu.key_stats): no
COUNT/MIN/MAX job on BigQuery on most nights — and the check still finds every difference,
including keys far outside the remembered range. Fixtures: tests/integration/test_state_batching
(schemas and datasets prefixed `hk_wh_`)."""

import re

from google.cloud import bigquery

from hakobu.bqschema import KEYS_SUFFIX
from tests.integration.test_state_batching import TABLES, three_tables  # noqa: F401
from tests.integration.test_warehouse import datasets, wh_config, wh_schema  # noqa: F401
from tests.live import destination_for, sync_tenant

STATS = re.compile(r"SELECT COUNT\(\*\) AS n, MIN\(")


def _queries(monkeypatch) -> list[str]:
    seen: list[str] = []
    orig = bigquery.Client.query

    def query(self, sql, *a, **kw):
        seen.append(sql)
        return orig(self, sql, *a, **kw)
    monkeypatch.setattr(bigquery.Client, "query", query)
    return seen


def _stats_queries(seen: list[str], dataset: str) -> int:
    return sum(1 for q in seen if STATS.search(q) and f".{dataset}." in q)


def test_remembered_stats_save_the_stats_job_and_still_find_every_difference(
        three_tables, strict_env, sql, bq_client, monkeypatch):    # noqa: F811
    cfg, schema, cust, wh = three_tables
    seen = _queries(monkeypatch)
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))
    sql(f"UPDATE `{schema}`.members SET note = 'n1', updated_at = NOW(6) WHERE id <= 4")
    first = len(seen)
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))
    night1 = seen[first:]
    assert _stats_queries(night1, cust) == len(TABLES)         # queried once, remembered
    memo = destination_for(cfg.tenant("a")).read_key_stats("members")
    assert memo["rows"] == 200 and memo["lo"] == "1" and memo["hi"] == "200"

    # differences the remembered sizing must still find: a hard delete in the source, and
    # rows in BigQuery far outside the remembered key range (one below, one above)
    sql(f"DELETE FROM `{schema}`.members WHERE id = 17")
    ref = f"`hakobu-test.{cust}.members`"
    for k in (-5, 10 ** 12):
        bq_client.query(f"INSERT INTO {ref} (id, updated_at, email) VALUES "
                        f"({k}, DATETIME '2026-01-01 00:00:00', 'planted')").result()
    second = len(seen)
    res = {r.table: r for r in sync_tenant(cfg, "a", merge_warehouse=False)}
    assert _stats_queries(seen[second:], cust) == 0             # sized from the memo
    m = res["members"]
    assert m.ok and m.extra["deletes_rows_deleted"] == 3, m.extra   # 17, -5 and 10**12
    assert m.check is not None and m.check.equal
    ids = {r["id"] for r in bq_client.query(f"SELECT id FROM {ref}").result()}
    assert ids == set(range(1, 201)) - {17}


def test_stats_outgrown_are_queried_again(three_tables, strict_env, sql, monkeypatch):  # noqa: F811
    cfg, schema, cust, wh = three_tables
    seen = _queries(monkeypatch)
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))   # remembers 200
    sql(f"INSERT INTO `{schema}`.members (id, updated_at, email) SELECT id + 1000, NOW(6), "
        f"email FROM `{schema}`.members WHERE id <= 100")            # +50 %: outgrown
    mark = len(seen)
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))   # uses, forgets
    dest = destination_for(cfg.tenant("a"))
    assert dest.read_key_stats("members") == {"rows": 0}
    assert all(r.ok for r in sync_tenant(cfg, "a", merge_warehouse=False))   # queries again
    assert _stats_queries(seen[mark:], cust) == 1
    memo = dest.read_key_stats("members")
    assert memo["rows"] == 300 and memo["hi"] == "1100"
    rows = dest.rows(f"SELECT COUNT(*) AS n FROM {dest.ref('_hakobu_state')} "
                     "WHERE table_name = @t",
                     [bigquery.ScalarQueryParameter("t", "STRING", "members" + KEYS_SUFFIX)])
    assert rows[0]["n"] == 1
