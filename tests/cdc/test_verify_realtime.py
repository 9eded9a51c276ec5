"""`hakobu verify` on a realtime table (issue #15, part 6): the change log is merged up to the
stream's checkpoint first, then keys and content are compared with the source as for nightly
tables; a corrupted value is found, named and repaired; the stream goes on afterwards."""

import json


from hakobu.cli import main
from tests.cdc.rt_helpers import PROJECT, bq_rows, catch_up, config_of, source_rows, stream_of

ITEMS = "CREATE TABLE `{s}`.items (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
RT = "- name: items\n  delivery: realtime\n"



def _verify(capsys, *args) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = main(["verify", "r", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_verify_merges_first_finds_a_corrupted_value_and_repairs_it(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path, monkeypatch,
        capsys):
    s, ds = schema, datasets()
    cdc_sql(ITEMS.format(s=s))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, 41)])
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, RT, "")})
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("HAKOBU_WORK_DIR", str(tmp_path / "w"))
    cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w", merge_every_s=3600)
    try:
        catch_up(cs)
        cdc_sql(f"UPDATE `{s}`.items SET v = 'streamed' WHERE id IN (2, 3)")
        cdc_sql(f"DELETE FROM `{s}`.items WHERE id = 9")
        cdc_sql(f"INSERT INTO `{s}`.items VALUES (99, 'new', 99)")
        cs.run(blocking=True, for_seconds=3)          # in the change log, not merged
    finally:
        io.close()
    want = source_rows(cdc_sql, s, "items", "id, v, n")
    assert bq_rows(bq_client, ds, "items") != want
    code, [v] = _verify(capsys)
    assert (code, v["target"], v["equal"]) == (0, "customer/items", True), v
    assert "merged up to the stream's checkpoint" in v["note"]
    assert bq_rows(bq_client, ds, "items") == want                    # merged by verify
    # a value corrupted in BigQuery is told from a late change: re-merged, still different
    bq_client.query(f"UPDATE `{PROJECT}.{ds}.items` SET v = 'corrupt' WHERE id = 5").result()
    code, [v] = _verify(capsys)
    assert (code, v["target"], v["equal"], v["changed"]) == (1, "customer/items", False, 1), v
    assert "compared 4 time(s)" in v["note"]
    code, [v] = _verify(capsys, "--repair")
    assert (code, v["repaired"], v["equal"]) == (0, True, True), v
    assert bq_rows(bq_client, ds, "items") == want
    # the stream's state was left to it: it goes on (no compare-and-set conflict)
    cdc_sql(f"UPDATE `{s}`.items SET n = -n WHERE id = 5")
    assert main(["stream", "--once"]) == 0
    assert bq_rows(bq_client, ds, "items") == source_rows(cdc_sql, s, "items", "id, v, n")
