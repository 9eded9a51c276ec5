"""Issue #11 item 10: a column policy changes after rows were delivered, and the run that sees
the change removes or rewrites the values already in BigQuery — in the customer's dataset, the
shared warehouse (every tenant's slice), and leftover staging and shadow tables. A column that
comes back (out of `exclude`, out of `drop_columns`, out of `hash_columns`) is back-filled.

Against the real MariaDB and the emulator (behind tests/bq_live.py). "No clear value remains" is
checked by reading every row of every table of the datasets as JSON text (every column). Schemas
and datasets are prefixed `hk_pol_` and dropped afterwards.
"""

import datetime as dt
import hashlib
import hmac
import textwrap

import pytest

from hakobu import policy
from hakobu.config import load_config
from hakobu.sinks import warehouse_shadow
from tests.live import sync_tenant
from tests.helpers import tenant_body, unique, write_config

KEY_ENV = "HK_POL_TEST_KEY"
KEY = "pol-key-0123456789"
TENANTS = ("a", "b")


@pytest.fixture
def schemas(sql):
    made = {t: unique("hk_pol") for t in TENANTS}
    for name in made.values():
        sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield made
    for name in made.values():
        sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def datasets(bq_client):
    made = {"a": unique("hk_pol"), "b": unique("hk_pol"), "wh": unique("hk_pol")}
    yield made
    for name in made.values():
        bq_client.delete_dataset(f"hakobu-test.{name}", delete_contents=True, not_found_ok=True)


@pytest.fixture
def setup(tmp_path, mysql_server, monkeypatch, bq_env, schemas, datasets):
    """write(tables_a=..., tables_b=..., hash=[...], drop=[...]) -> a freshly loaded Config."""
    monkeypatch.setenv(KEY_ENV, KEY)
    root = tmp_path / unique("cfg")

    def write(*, extra_a="", extra_b="", hash_columns=("phone",), drop_columns=()):
        bodies = {t: tenant_body(schemas[t], datasets[t],
                                 "- name: members\n  cursor: updated_at\n  chunk_rows: 7\n"
                                 + textwrap.indent(extra, "  "))
                  for t, extra in (("a", extra_a), ("b", extra_b))}
        write_config(root, mysql_server, bodies)
        (root / "tenants" / "warehouse.yaml").write_text(
            f"warehouse:\n  project: hakobu-test\n  dataset: {datasets['wh']}\n"
            f"  location: US\n  hash_key_env: {KEY_ENV}\n"
            f"  drop_columns: [{', '.join(drop_columns)}]\n"
            f"  hash_columns: [{', '.join(hash_columns)}]\n")
        monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
        return load_config(root)
    return write


N = 12


def make_members(sql, schemas):
    """members of each tenant with values that are unique text, so a leak is found by search."""
    for t, schema in schemas.items():
        sql(f"CREATE TABLE `{schema}`.members (id BIGINT PRIMARY KEY, "
            "updated_at DATETIME(6) NOT NULL, email VARCHAR(64), phone VARCHAR(32), note TEXT, "
            "nickname VARCHAR(32), birthday DATE, remember_token VARCHAR(32), "
            "INDEX ix_u (updated_at))")
        sql.many(f"INSERT INTO `{schema}`.members VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 [(i, dt.datetime(2026, 1, 1) + dt.timedelta(minutes=i), email(t, i),
                   f"+81-{t}-{i:04d}", f"{t}-note-{i}", f"{t}-nick-{i}", birthday(t, i),
                   f"{t}-tok-{i}") for i in range(1, N + 1)])


def email(t, i):
    return f"{t}-mail-{i}@clear.example"


def birthday(t, i):
    return dt.date(1901 if t == "a" else 1902, 1, 1) + dt.timedelta(days=i)


def hashed(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def everything(bq_client, dataset) -> dict[str, str]:
    """Every row of every table of a dataset, every column, as JSON text: table -> text."""
    out = {}
    for t in bq_client.list_tables(f"hakobu-test.{dataset}"):
        rows = bq_client.query(f"SELECT TO_JSON_STRING(t) AS j FROM "
                               f"`hakobu-test.{dataset}.{t.table_id}` AS t").result()
        out[t.table_id] = "\n".join(r["j"] for r in rows)
    return out


def leaks(bq_client, dataset, needles) -> list[tuple[str, str]]:
    found = everything(bq_client, dataset)
    return [(table, n) for table, text in found.items() for n in needles if n in text]


def rows(bq_client, sql):
    return [dict(r) for r in bq_client.query(sql).result()]


def run(config, tenant):
    [r] = sync_tenant(config, tenant)
    assert r.ok and r.warehouse == "ok", (r.error, r.warehouse_error)
    return r


def plant(bq_client, dataset, table, columns: dict[str, str]):
    """A leftover table (a crashed run's staging, a crashed backfill's shadow) holding values."""
    cols = ", ".join(f"`{c}` STRING" for c in columns)
    vals = ", ".join(f"'{v}'" for v in columns.values())
    bq_client.query(f"CREATE TABLE `hakobu-test.{dataset}.{table}` ({cols})").result()
    bq_client.query(f"INSERT INTO `hakobu-test.{dataset}.{table}` VALUES ({vals})").result()


def test_policy_changes_remove_or_rehash_values_already_delivered(
        sql, schemas, datasets, setup, bq_client, monkeypatch):
    make_members(sql, schemas)
    config = setup(extra_b="export_sensitive: [remember_token]\n")
    for t in TENANTS:
        run(config, t)
    wh, ca, cb = datasets["wh"], datasets["a"], datasets["b"]
    # delivered as the policy said: clear email/note/nickname/birthday in the warehouse too
    assert not leaks(bq_client, wh, [f"+81-{t}-0001" for t in TENANTS])     # phone hashed
    assert {n for _, n in leaks(bq_client, wh, [email("a", 1), "b-note-1", "a-nick-1"])} == \
        {email("a", 1), "b-note-1", "a-nick-1"}
    assert leaks(bq_client, cb, ["b-tok-1"]) and not leaks(bq_client, ca, ["a-tok-1"])
    # leftovers of crashed runs holding the values about to be withheld
    plant(bq_client, ca, "_hakobu_shadow_members", {"id": "1", "note": "a-note-1"})
    plant(bq_client, ca, "_hakobu_stg_members_deadbeef", {"id": "1", "nickname": "a-nick-1"})
    plant(bq_client, wh, "_hakobu_stg_members_b_deadbeef_0", {"id": "1", "email": email("b", 1)})
    a_shadow = warehouse_shadow("a", "members")
    plant(bq_client, wh, a_shadow, {"id": "1", "note": "a-note-2"})

    # every kind of policy change at once
    config = setup(extra_a="exclude: [note]\n",                 # a's tenant file
                   hash_columns=("phone", "email"),             # newly hashed
                   drop_columns=("birthday",))                  # newly dropped
    monkeypatch.setattr(policy, "SENSITIVE_WORDS", policy.SENSITIVE_WORDS | {"nickname"})
    #                                                             rule widened: credential-like
    # (and b's export_sensitive release of remember_token is withdrawn)

    r = run(config, "a")                 # the first tenant's run that sees the changes
    assert r.extra["policy_columns_removed"] == ("note (excluded in the tenant file), "
                                                 "nickname (credential-like)")
    assert "_hakobu_shadow_members" in r.extra["policy_tables_dropped"]
    w = r.warehouse_extra
    assert w["policy_columns_removed"] == "nickname (credential-like), birthday (drop_columns)"
    assert w["policy_columns_rehashed"] == "email (hashed)"
    assert w["policy_columns_cleared"] == "note (excluded in the tenant file)"
    assert "_hakobu_stg_members_b_deadbeef_0" in w["policy_tables_dropped"]
    assert a_shadow in w["policy_tables_dropped"]
    assert w["reread"] == "columns created again by this run: email"
    assert r.rows_read == N                                       # a's slice refilled at once

    a_clear = [f"a-note-{i}" for i in range(1, N + 1)] + [f"a-nick-{i}" for i in range(1, N + 1)]
    assert leaks(bq_client, ca, a_clear) == []
    every_email = [email(t, i) for t in TENANTS for i in range(1, N + 1)]
    wh_clear = (every_email + a_clear + [f"b-nick-{i}" for i in range(1, N + 1)]
                + [birthday(t, i).isoformat() for t in TENANTS for i in range(1, N + 1)])
    assert leaks(bq_client, wh, wh_clear) == []      # b's clear emails too: dropped for everyone
    assert leaks(bq_client, wh, ["b-note-1"])        # b does not exclude note: its values stay
    got = {(x["tenant_id"], x["id"]): x["email"] for x in rows(
        bq_client, f"SELECT tenant_id, id, email FROM `hakobu-test.{wh}.members`")}
    assert all(got[("a", i)] == hashed(email("a", i)) for i in range(1, N + 1))
    assert all(got[("b", i)] is None for i in range(1, N + 1))   # until b's next run

    r = run(config, "b")
    assert r.extra["policy_columns_removed"] == ("nickname (credential-like), "
                                                 "remember_token (credential-like)")
    assert r.warehouse_extra["reread"] == "columns this slice was not filled into: email"
    assert r.warehouse_extra["policy_columns_rehashed"] == "-"    # a's run did it already
    assert leaks(bq_client, cb, [f"b-tok-{i}" for i in range(1, N + 1)]
                 + [f"b-nick-{i}" for i in range(1, N + 1)]) == []
    assert leaks(bq_client, wh, wh_clear) == []
    got = {(x["tenant_id"], x["id"]): x["email"] for x in rows(
        bq_client, f"SELECT tenant_id, id, email FROM `hakobu-test.{wh}.members`")}
    assert all(got[(t, i)] == hashed(email(t, i)) for t in TENANTS for i in range(1, N + 1))
    # the customer keeps what only the warehouse withholds, and what is merely history
    [c] = rows(bq_client, f"SELECT email, birthday FROM `hakobu-test.{ca}.members` WHERE id = 1")
    assert c == {"email": email("a", 1), "birthday": birthday("a", 1)}
    # done once: the next runs change nothing and read nothing
    for t in TENANTS:
        r = run(config, t)
        assert r.rows_read == 0 and r.extra["reread"] == r.warehouse_extra["reread"] == "-"
        assert r.extra["policy_columns_removed"] == "-"
        assert r.warehouse_extra["policy_columns_rehashed"] == "-"


def test_columns_that_come_back_are_back_filled_for_every_tenant(
        sql, schemas, datasets, setup, bq_client):
    make_members(sql, schemas)
    config = setup(extra_a="exclude: [note]\n", drop_columns=("birthday",),
                   hash_columns=("phone",))
    for t in TENANTS:
        run(config, t)
    wh, ca = datasets["wh"], datasets["a"]
    assert not leaks(bq_client, ca, ["a-note-1"]) and not leaks(bq_client, wh, ["a-note-1"])

    # note leaves a's exclude list, birthday leaves drop_columns, phone leaves hash_columns
    config = setup(drop_columns=(), hash_columns=())
    r = run(config, "a")
    assert r.columns_added == ["note"] and r.rows_read == N
    assert r.extra["reread"] == "columns added to a table holding rows: note"
    assert r.warehouse_extra["policy_columns_rehashed"] == "phone (unhashed)"
    [cust] = rows(bq_client, f"SELECT COUNTIF(note IS NOT NULL) AS n FROM "
                             f"`hakobu-test.{ca}.members`")
    assert cust["n"] == N                        # rows delivered before have their values now
    r = run(config, "b")
    assert "birthday" in r.warehouse_extra["reread"] and "phone" in r.warehouse_extra["reread"]
    got = rows(bq_client, f"SELECT tenant_id, id, note, birthday, phone FROM "
                          f"`hakobu-test.{wh}.members` ORDER BY tenant_id, id")
    assert len(got) == 2 * N
    for x in got:
        t, i = x["tenant_id"], x["id"]
        assert (x["note"], x["birthday"], x["phone"]) == \
            (f"{t}-note-{i}", birthday(t, i), f"+81-{t}-{i:04d}"), x
    for t in TENANTS:
        r = run(config, t)
        assert r.rows_read == 0 and r.warehouse_extra["reread"] == "-"
