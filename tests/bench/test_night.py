"""The simulated night's pure parts: the fleet's layout, its tenant files (loaded by hakobu's own
config loader), a night's changes, and the goal arithmetic. No database, under a second."""

from collections import Counter

from bench import night_fixtures as nf
from bench.night_report import busy_seconds, figures_of, goals, max_window_rate, overhead
from hakobu.config import load_config


def test_layout_is_skewed_mixed_and_spread_over_three_clusters():
    fleet = nf.layout(300)
    assert len({t.tid for t in fleet}) == 300
    sizes = Counter(t.size for t in fleet)
    assert sizes == {"large": 3, "medium": 30, "small": 267}
    assert Counter(t.cluster for t in fleet) == {c: 100 for c in nf.CLUSTERS}
    shared = [t for t in fleet if t.shared]
    assert 90 <= len(shared) <= 110 and not any(t.size == "large" for t in shared)
    assert len({(t.schema, t.org) for t in shared}) == len(shared)       # one org per tenant
    assert {t.schema for t in shared} == {f"hakobu_night_{c[-2:]}_shared" for c in nf.CLUSTERS}
    assert all(t.start_s < t.deadline_s <= nf.NIGHT_S for t in fleet)


def test_tenant_files_load_with_hakobus_config(tmp_path):
    fleet = nf.layout(12)
    ports = dict(nf.PORTS)
    nf.write_config(tmp_path, fleet, ports, {c: 1000 for c in nf.CLUSTERS}, "logical")
    cfg = load_config(tmp_path)
    assert sorted(cfg.tenants) == [t.tid for t in fleet]
    assert cfg.warehouse.enabled and cfg.warehouse.dataset == nf.WAREHOUSE_DATASET
    t = cfg.tenants["n006"]
    assert t.source.shared and t.source.tenant_column == "org_id"
    assert [x.cursor for x in t.tables] == ["updated_at"] * 7 + [None]
    assert cfg.clusters["night-c2"].read_budget.counter == "logical"
    assert cfg.clusters["night-c2"].port == 3422


def test_changes_are_between_half_and_two_percent():
    fractions = [nf.changed_fraction(f"n{i:03d}", table, night)
                 for i in range(50) for table in nf.TABLES for night in range(3)]
    assert min(fractions) >= 0.005 and max(fractions) <= 0.02
    shared = next(t for t in nf.layout(12) if t.shared)
    for sql, args in nf.change_sql(shared, "orders", 1):
        assert "org_id = %s" in sql and args[0] == shared.org


def _sample(t, c1):
    return (t, {"night-c1": {"Innodb_buffer_pool_read_requests": c1, "Innodb_pages_read": 0}})


def test_goal_arithmetic():
    assert busy_seconds([(0, 2), (1, 3), (5, 6)]) == 4
    samples = [_sample(float(t), 100 * t) for t in range(21)]
    assert max_window_rate(samples, "night-c1") == 100
    runs = [{"tenant": "n000", "cluster": "night-c1", "ok": True, "wall_s": 10.0,
             "engine_s": 8.0, "jobs": 20, "job_s_sum": 6.0, "job_wall_s": 4.0,
             "start_s": 0.0, "end_s": 10.0},
            {"tenant": "n003", "cluster": "night-c1", "ok": False, "wall_s": 5.0,
             "engine_s": 5.0, "jobs": 10, "job_s_sum": 2.0, "job_wall_s": 1.0,
             "start_s": 10.0, "end_s": 20.0}]
    ov = overhead(runs)
    assert ov["dagster_s"] == 2.0 and abs(ov["share"] - 7 / 15) < 1e-9
    specs = [t for t in nf.layout(12) if t.tid in ("n000", "n003", "n006")]
    fig = figures_of(specs=specs, runs=runs, night0=[], deadlines={"n000": 12.0, "n003": 15.0,
                                                                    "n006": 30.0},
                     stats={"quota_errors": {"dml_outstanding": 1}, "jobs": 30, "tables": {}},
                     samples=samples, naive={"night-c1": {"logical": 40_000, "physical": 0,
                                                          "rows": 9}},
                     budgets={"night-c1": 100}, cust_bad={}, wh_bad={"n003": ["x"]},
                     latency=0.05, touched={"night-c1": 5}, timings={})
    got = {g.name: g for g in goals(fig)}
    assert got["night-failed-runs"].measured == 2            # n003 failed, n006 never ran
    assert got["night-deadlines"].measured == 2              # n003 ended at 20 > 15; n006
    assert got["night-quota-errors"].measured == 1
    assert got["night-warehouse"].measured == 1
    assert got["night-budget"].measured == 2000 / 20 / 100   # 2,000 pages over 20 busy s
    assert got["night-pages"].measured == 2000 / 40_000 and got["night-pages"].passed


def test_jobs_are_told_apart_by_kind():
    from bench.night_report import kinds_of, kinds_sentence
    from bench.night_run import job_kind
    assert job_kind("load_table_from_file", None) == "load"
    assert job_kind("query", "MERGE `p.d.members` T USING `p.d._stg` S ON ...") == "merge"
    assert job_kind("query", "MERGE `p`.`d`.`_hakobu_state` T USING (SELECT 1) S") == "merge state"
    assert job_kind("query", "SELECT table_name, watermark FROM `p.d._hakobu_state` W") == "state read"
    assert job_kind("query", "SELECT MOD(x, 8) AS b, COUNT(*) AS n, 0 AS s, BIT_XOR(h) AS x "
                    "FROM t T GROUP BY 1") == "key checksum"
    assert job_kind("query", "SELECT MOD(x, 8) AS b, COUNT(*) AS n, BIT_XOR(h) AS x FROM t T "
                    "GROUP BY 1") == "content digest"
    assert job_kind("query", "SELECT COUNT(*) AS n FROM `p.d.t` T") == "count"
    assert job_kind("query", "CREATE OR REPLACE TABLE `p.d.t` AS SELECT a FROM s") == "replace as select"
    assert job_kind("query", "DROP TABLE IF EXISTS `p.d._stg`") == "drop"
    runs = [{"kinds": {"load": 2, "merge": 1}}, {"kinds": {"load": 1}}, {}]
    assert kinds_of(runs) == {"load": 3, "merge": 1}
    assert kinds_sentence(kinds_of(runs), 2) == "Jobs per run by kind: load 1.5, merge 0.5."
