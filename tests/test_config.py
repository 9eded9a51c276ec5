import textwrap

import pytest

from hakobu.config import load_config
from hakobu.errors import ConfigError, ConfigErrors


class _S:
    host, port, user = "127.0.0.1", 3306, "root"


GOOD = """\
source:
  schema: shop_a
destination:
  project: hakobu-test
  dataset: cust_a
schedule:
  cron: "0 2 * * *"
  timezone: Asia/Tokyo
deliver_by: "06:00"
tables:
  - name: orders
    cursor: updated_at
"""


def write(tmp_path, files: dict[str, str]):
    from tests.helpers import write_config

    write_config(tmp_path, _S, {})
    for name, text in files.items():
        (tmp_path / "tenants" / name).write_text(textwrap.dedent(text))
    return tmp_path


def errors_of(root) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        load_config(root)
    return [str(e) for e in exc.value.errors]


def test_repo_demo_config_is_valid():
    config = load_config()
    assert set(config.tenants) >= {"alpha", "beta", "gamma"}
    assert config.tenants["gamma"].source.shared
    assert not config.tenants["alpha"].source.shared
    assert {config.tenants[t].cluster for t in ("alpha", "gamma")} == {"studio-east",
                                                                       "studio-west"}


def test_good_tenant_loads(tmp_path):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD})
    config = load_config(root)
    t = config.tenant("a")
    assert t.tables[0].cursor == "updated_at"
    assert t.deliver_by.hour == 6
    assert config.managed_datasets()["hakobu-test.cust_a"].tenant == "a"


def test_malformed_yaml_names_file_and_line(tmp_path):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\nsource: [unclosed\n"})
    [err] = errors_of(root)
    assert "a.yaml:" in err and "malformed YAML" in err


def test_every_error_reported_at_once_with_lines(tmp_path):
    bad_key = "tenant: b\ncluster: main\n" + GOOD.replace("    cursor: updated_at",
                                                           "    cursro: updated_at")
    unknown_cluster = "tenant: c\ncluster: nowhere\n" + GOOD.replace("cust_a", "cust_c")
    bad_cron = "tenant: d\ncluster: main\n" + GOOD.replace('"0 2 * * *"', '"every night"') \
        .replace("cust_a", "cust_d")
    root = write(tmp_path, {"b.yaml": bad_key, "c.yaml": unknown_cluster, "d.yaml": bad_cron})
    errs = errors_of(root)
    assert len(errs) == 3, errs
    text = "\n".join(errs)
    assert "b.yaml:14: tables.0.cursro: unknown key" in text
    assert "c.yaml:2: cluster: unknown cluster 'nowhere'" in text
    assert "d.yaml:9: schedule.cron:" in text and "cron" in text


def test_file_name_must_match_tenant_id(tmp_path):
    root = write(tmp_path, {"x.yaml": "tenant: a\ncluster: main\n" + GOOD})
    [err] = errors_of(root)
    assert "rename the file to a.yaml" in err


def test_two_tenants_cannot_share_a_dataset(tmp_path):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD,
                            "b.yaml": "tenant: b\ncluster: main\n"
                                      + GOOD.replace("shop_a", "shop_b")})
    [err] = errors_of(root)
    assert "already the dataset of tenant 'a'" in err


def test_password_never_in_file(tmp_path):
    root = write(tmp_path, {})
    (root / "tenants" / "clusters.yaml").write_text(
        "clusters:\n  main:\n    host: h\n    user: u\n    password: hunter2\n")
    [err] = errors_of(root)
    assert "clusters.yaml:5" in err and "password_env" in err and "hunter2" not in err


def test_missing_password_variable_is_named(tmp_path, monkeypatch):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD})
    (root / "tenants" / "clusters.yaml").write_text(
        "clusters:\n  main:\n    host: h\n    user: u\n    password_env: HAKOBU_TEST_PW_XYZ\n")
    monkeypatch.delenv("HAKOBU_TEST_PW_XYZ", raising=False)
    cluster = load_config(root).clusters["main"]
    with pytest.raises(ConfigError, match="HAKOBU_TEST_PW_XYZ is not set"):
        cluster.password()
    monkeypatch.setenv("HAKOBU_TEST_PW_XYZ", "s3cret")
    secret = cluster.password()
    assert secret.reveal() == "s3cret"
    assert "s3cret" not in str(secret) and "s3cret" not in repr(secret)


def test_endpoint_interpolation(tmp_path, monkeypatch):
    root = write(tmp_path, {})
    (root / "tenants" / "clusters.yaml").write_text(
        "clusters:\n  main:\n    host: ${HAKOBU_T_HOST:-db.local}\n    port: ${HAKOBU_T_PORT}\n"
        "    user: u\n")
    monkeypatch.delenv("HAKOBU_T_HOST", raising=False)
    monkeypatch.delenv("HAKOBU_T_PORT", raising=False)
    [err] = errors_of(root)
    assert "HAKOBU_T_PORT is not set" in err
    monkeypatch.setenv("HAKOBU_T_PORT", "3307")
    c = load_config(root).clusters["main"]
    assert (c.host, c.port) == ("db.local", 3307)


def test_shared_source_needs_both_column_and_value(tmp_path):
    body = GOOD.replace("  schema: shop_a\n", "  schema: shop_a\n  tenant_column: tenant_id\n")
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + body})
    [err] = errors_of(root)
    assert "a.yaml:3: source:" in err and "tenant_value" in err


def test_config_dir_from_environment(tmp_path, monkeypatch):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD})
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    assert list(load_config().tenants) == ["a"]


def test_unknown_tenant_and_table(tmp_path):
    config = load_config(write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD}))
    with pytest.raises(ConfigError, match="unknown tenant 'zz'.*a"):
        config.tenant("zz")
    with pytest.raises(ConfigError, match="unknown table 'nope'.*orders"):
        config.tenant("a").table("nope")


def test_query_rows_below_chunk_rows_is_refused_with_the_line(tmp_path):
    text = "tenant: a\ncluster: main\n" + GOOD.replace(
        "    cursor: updated_at", "    cursor: updated_at\n    chunk_rows: 1000\n    query_rows: 10")
    [err] = errors_of(write(tmp_path, {"a.yaml": text}))
    assert "a.yaml:" in err and "query_rows (10) must be at least chunk_rows (1000)" in err
    ok = "tenant: a\ncluster: main\n" + GOOD.replace(
        "    cursor: updated_at", "    cursor: updated_at\n    query_rows: 100000")
    assert load_config(write(tmp_path, {"a.yaml": ok})).tenant("a").tables[0].query_rows == 100000


# -- issue #11 item 9: tenants never overlap (offline checks) -----------------------------------

def shared(tid: str, value: str, *, schema="shop", column="tenant_id", cluster="main",
           dataset=None) -> str:
    body = GOOD.replace("  schema: shop_a\n", f"  schema: {schema}\n  tenant_column: {column}\n"
                                               f"  tenant_value: {value}\n")
    return f"tenant: {tid}\ncluster: {cluster}\n" + body.replace("cust_a", dataset or f"cust_{tid}")


@pytest.mark.parametrize("a,b,says", [
    ("1", '"1x"', "'1x' is a string where tenant(s) 'a' of schema 'shop' use integers"),
    ("1", '"01"', "'1x' = 1 and '01' = 1"),
    ('"acme"', '"ACME"', "equal under a case-insensitive or PAD SPACE collation"),
    ('"acme"', '"acme "', "equal under a case-insensitive or PAD SPACE collation"),
    ("3", "3", "are the same value"),
    ('"3"', "'3'", "are the same value"),
])
def test_tenant_values_that_mysql_could_take_for_one_are_refused(tmp_path, a, b, says):
    root = write(tmp_path, {"a.yaml": shared("a", a), "b.yaml": shared("b", b)})
    [err] = errors_of(root)
    assert "b.yaml:6: source" in err and "'a'" in err, err
    assert says in err, err


def test_distinct_tenant_values_of_one_type_are_fine(tmp_path):
    root = write(tmp_path, {"a.yaml": shared("a", '"acme"'), "b.yaml": shared("b", '"acme2"'),
                            "c.yaml": shared("c", "3", schema="shop2"),
                            "d.yaml": shared("d", "4", schema="shop2")})
    assert set(load_config(root).tenants) == {"a", "b", "c", "d"}


def test_a_whole_schema_tenant_beside_shared_tenants_is_refused(tmp_path):
    whole = "tenant: w\ncluster: main\n" + GOOD.replace("shop_a", "shop").replace("cust_a", "cw")
    root = write(tmp_path, {"a.yaml": shared("a", "1"), "w.yaml": whole})
    [err] = errors_of(root)
    assert "w.yaml:4: source.schema: tenant 'w' reads the whole schema 'shop'" in err
    assert "'a'" in err and "tenant_column and tenant_value" in err


def test_tenants_of_one_schema_must_use_one_tenant_column(tmp_path):
    root = write(tmp_path, {"a.yaml": shared("a", "1"),
                            "b.yaml": shared("b", "2", column="account_id")})
    [err] = errors_of(root)
    assert "different columns (account_id, tenant_id)" in err and "a.yaml:5" in err


def test_one_server_under_two_cluster_names_or_schema_case_is_one_source(tmp_path):
    root = write(tmp_path, {"a.yaml": shared("a", "7"),
                            "b.yaml": shared("b", "7", cluster="alias", schema="SHOP")})
    (root / "tenants" / "clusters.yaml").write_text(
        "clusters:\n  main:\n    host: db.local\n    user: u\n"
        "  alias:\n    host: DB.local\n    port: 3306\n    user: v\n")
    [err] = errors_of(root)
    assert "tenants 'a'" in err and "'b' read the same rows" in err


@pytest.mark.parametrize("value", ["yes", "true", "1.0"])
def test_tenant_value_must_be_an_integer_or_a_string(tmp_path, value):
    [err] = errors_of(write(tmp_path, {"a.yaml": shared("a", value)}))
    assert "a.yaml:6: source.tenant_value:" in err and "integer id unquoted" in err


def test_dataset_names_differing_only_in_case_are_one_dataset(tmp_path):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD,
                            "b.yaml": "tenant: b\ncluster: main\n"
                                      + GOOD.replace("shop_a", "shop_b").replace("cust_a", "CUST_A")})
    [err] = errors_of(root)
    assert "b.yaml:7: destination.dataset: hakobu-test.CUST_A is already the dataset of tenant " \
           "'a'" in err and "differing only in case" in err


def test_a_tenant_dataset_cannot_be_the_warehouse(tmp_path):
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + GOOD.replace("cust_a", "DWH"),
                            "warehouse.yaml": "warehouse:\n  project: hakobu-test\n"
                                              "  dataset: dwh\n"})
    [err] = errors_of(root)
    assert "a.yaml:7: destination.dataset: hakobu-test.DWH is the internal warehouse's" in err


# -- names (issue #16) ---------------------------------------------------------------------------

ODD_TABLES = ["ord$2024", "my table", "a-b", "a.b", "Ünïcødé", "名前", "order", "2024_orders",
              "_TABLE_x", "_hakobu_state", "it's `q`", "x" * 64]


def one_table(tid: str, name: str, dataset: str | None = None, **table) -> str:
    extra = "".join(f"    {k}: {v}\n" for k, v in table.items())
    return (f"tenant: {tid}\ncluster: main\n"
            + GOOD.replace("cust_a", dataset or f"cust_{tid}").replace("shop_a", f"shop_{tid}")
            .replace("  - name: orders\n    cursor: updated_at\n",
                     f"  - name: '{name.replace(chr(39), chr(39) * 2)}'\n{extra}"))


@pytest.mark.parametrize("name", ODD_TABLES)
def test_any_mysql_table_name_is_accepted(tmp_path, name):
    config = load_config(write(tmp_path, {"a.yaml": one_table("a", name, cursor="'my col'",
                                                              exclude="['a-b', 'x.y']")}))
    [t] = config.tenant("a").tables
    assert t.name == name and t.cursor == "my col" and t.exclude == ["a-b", "x.y"]


@pytest.mark.parametrize("yaml_value, says", [
    ("2024", "read by YAML as a int; write the name in quotes"),
    ("on", "read by YAML as a bool"),
    ("'ends with space '", "cannot end with a space"),
    ("'" + "y" * 65 + "'", "1 to 64 characters"),
    ("'emoji 🍣'", "outside the Basic Multilingual Plane"),
])
def test_names_mysql_cannot_hold_or_yaml_misreads_are_refused_at_their_line(tmp_path, yaml_value,
                                                                          says):
    text = one_table("a", "t").replace("  - name: 't'", f"  - name: {yaml_value}")
    [err] = errors_of(write(tmp_path, {"a.yaml": text}))
    assert "a.yaml:13: tables.0.name:" in err and says in err, err


def test_tables_one_bigquery_name_apart_in_one_file_are_refused_at_their_line(tmp_path):
    text = one_table("a", "Orders") + "  - name: orders\n" + "  - name: 'ord$2024'\n" \
        + "  - name: ord_2024_a76493\n"
    errs = errors_of(write(tmp_path, {"a.yaml": text}))
    assert len(errs) == 2, errs
    assert "a.yaml:14: tables.1.name: tables 'Orders', 'orders' would all be delivered as " \
           "BigQuery table 'Orders'" in errs[0]
    assert "a.yaml:16: tables.3.name: tables 'ord$2024', 'ord_2024_a76493'" in errs[1]


def test_tables_of_two_tenants_one_bigquery_name_apart_are_refused(tmp_path):
    files = {"a.yaml": one_table("a", "ord$2024"), "b.yaml": one_table("b", "ord_2024_a76493")}
    [err] = errors_of(write(tmp_path, files))
    assert "b.yaml:13: tables.0.name: table 'ord_2024_a76493' and table 'ord$2024' of tenant " \
           "'a'" in err
    # names differing in case are two tables, two assets — unless the warehouse holds both
    ok = {"a.yaml": one_table("a", "Orders"), "b.yaml": one_table("b", "orders")}
    assert set(load_config(write(tmp_path / "ok", ok)).tenants) == {"a", "b"}
    wh = {**ok, "warehouse.yaml": "warehouse:\n  project: hakobu-test\n  dataset: dwh\n"}
    [err] = errors_of(write(tmp_path / "wh", wh))
    assert "without case" in err and "b.yaml:13" in err


def test_a_cron_dagster_refuses_is_refused_at_its_line(tmp_path):
    text = one_table("a", "t").replace('"0 2 * * *"', '"0 2 30 2 *"')
    [err] = errors_of(write(tmp_path, {"a.yaml": text}))
    assert "a.yaml:9: schedule.cron:" in err and "February has no day 30" in err


# -- isolation (issue #16) -------------------------------------------------------------------------

def test_isolated_load_leaves_only_the_broken_tenant_out(tmp_path):
    files = {"a.yaml": one_table("a", "t"), "b.yaml": one_table("b", "t"),
             "c.yaml": one_table("c", "t").replace("deliver_by: \"06:00\"", "deliver_by: 25h")}
    root = write(tmp_path, files)
    with pytest.raises(ConfigErrors):
        load_config(root)                          # strict: validate still fails
    config = load_config(root, isolate=True)
    assert set(config.tenants) == {"a", "b"}
    [b] = config.broken
    assert b.tenant == "c" and b.file.endswith("c.yaml")
    assert "c.yaml:11: deliver_by: use HH:MM" in b.describe()
    with pytest.raises(ConfigErrors) as exc:
        config.tenant("c")
    assert "tenant 'c' is left out" in str(exc.value) and "c.yaml:11" in str(exc.value)


def test_conflicting_tenant_files_leave_every_tenant_involved_out(tmp_path):
    files = {"a.yaml": one_table("a", "t", dataset="cust_x"),
             "b.yaml": one_table("b", "t", dataset="cust_x"), "c.yaml": one_table("c", "t")}
    config = load_config(write(tmp_path, files), isolate=True)
    assert set(config.tenants) == {"c"}                     # which file is wrong is unknown
    assert {b.tenant for b in config.broken} == {"a", "b"}
    assert all("already the dataset of tenant 'a'" in b.describe() for b in config.broken)


@pytest.mark.parametrize("file, text", [
    ("clusters.yaml", "clusters:\n  main:\n    host: h\n    user: u\n    port: many\n"),
    ("warehouse.yaml", "warehouse:\n  project: hakobu-test\n  datasett: dwh\n"),
])
def test_shared_files_fail_closed_even_isolated(tmp_path, file, text):
    root = write(tmp_path, {"a.yaml": one_table("a", "t")})
    (root / "tenants" / file).write_text(text)
    with pytest.raises(ConfigErrors) as exc:
        load_config(root, isolate=True)
    assert file in str(exc.value)


# -- issue #15: delivery: realtime ---------------------------------------------------------------

def test_delivery_defaults_to_nightly_and_takes_realtime(tmp_path):
    text = "tenant: a\ncluster: main\n" + GOOD.replace(
        "    cursor: updated_at", "    cursor: updated_at\n  - name: events\n"
                                  "    delivery: realtime\n    merge_every_minutes: 30")
    t = load_config(write(tmp_path, {"a.yaml": text})).tenant("a")
    assert [x.delivery for x in t.tables] == ["nightly", "realtime"]
    assert t.realtime_tables == ["events"] and t.nightly_tables == ["orders"]
    assert t.table("events").merge_every_minutes == 30


@pytest.mark.parametrize("extra, says", [
    ("    delivery: streaming", "'nightly' or 'realtime'"),
    ("    delivery: realtime\n    without_primary_key: replace", "needs a primary key"),
    ("    delivery: realtime\n    merge_every_minutes: 5", "greater than or equal to 10"),
])
def test_realtime_options_are_refused_with_file_and_line(tmp_path, extra, says):
    text = "tenant: a\ncluster: main\n" + GOOD.replace(
        "    cursor: updated_at", "    cursor: updated_at\n" + extra)
    [err] = errors_of(write(tmp_path, {"a.yaml": text}))
    assert "a.yaml:" in err and says in err, err


def test_a_live_view_that_would_be_another_table_is_refused(tmp_path):
    text = "tenant: a\ncluster: main\n" + GOOD.replace(
        "    cursor: updated_at", "    delivery: realtime\n  - name: orders_live")
    [err] = errors_of(write(tmp_path, {"a.yaml": text}))
    assert "a.yaml:" in err and "'orders_live'" in err and "realtime table 'orders'" in err
