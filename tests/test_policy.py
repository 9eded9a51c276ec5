"""The export policy, pure: credentials-like columns, the warehouse's drop/hash/tenant_id shape,
the HMAC key rule, and where a shared read starts when sinks' watermarks differ."""

import datetime as dt
import hashlib
import hmac
from decimal import Decimal

import pyarrow as pa
import pytest

from hakobu.config import Secret, Table, Warehouse
from hakobu.errors import ConfigError, SchemaError
from hakobu.plan import TablePlan
from hakobu.policy import (TENANT_BUCKETS, Hasher, export_plan, hash_key, is_sensitive,
                           tenant_bucket, warehouse_table)
from hakobu.watermarks import common_start
from hakobu.types import ColumnInfo, column_spec


def plan_of(columns: dict[str, str], pk=("id",), cursor="updated_at", tenant_column=None):
    specs = tuple(column_spec(ColumnInfo(n, t, t, True)) for n, t in columns.items())
    return TablePlan(tenant="acme", schema="s", table="members", specs=specs, primary_key=pk,
                     cursor=cursor, chunk_rows=100, tenant_column=tenant_column,
                     tenant_value=3 if tenant_column else None)


COLUMNS = {"id": "bigint", "updated_at": "datetime", "email": "varchar", "phone": "varchar",
           "note": "text", "password_hash": "char", "encrypted_password": "varchar",
           "remember_token": "varchar", "apiKey": "varchar", "token_count": "int",
           "hashtag": "varchar", "passenger": "varchar", "compass": "varchar"}


@pytest.mark.parametrize("name", ["password", "password_hash", "encrypted_password",
                                  "password_digest", "crypted_password", "passwd", "user_pwd",
                                  "reset_password_token", "remember_token", "access_token",
                                  "api_key", "apiKey", "API_KEY", "client_secret", "otp_secret",
                                  "password_salt", "salt", "private_key", "aws_access_key_id",
                                  "credentials", "userPassword", "refreshToken"])
def test_credentials_like_names(name):
    assert is_sensitive(name)


@pytest.mark.parametrize("name", ["email", "phone", "hashtag", "passenger", "compass",
                                  "content_hash", "keyword", "monkey", "status", "secretary"])
def test_ordinary_names(name):
    assert not is_sensitive(name)


def test_export_plan_withholds_credentials_unless_listed():
    plan = plan_of(COLUMNS)
    out = export_plan(plan, Table(name="members"))
    names = [s.name for s in out.specs]
    assert {"password_hash", "encrypted_password", "remember_token", "apiKey",
            "token_count"}.isdisjoint(names)
    assert {"id", "updated_at", "email", "hashtag", "passenger"} <= set(names)
    released = export_plan(plan, Table(name="members", export_sensitive=["remember_token"]))
    assert "remember_token" in [s.name for s in released.specs]
    assert "password_hash" not in [s.name for s in released.specs]


def test_a_withheld_key_is_an_error_with_the_fix():
    plan = plan_of({"token": "varchar", "updated_at": "datetime"}, pk=("token",))
    with pytest.raises(SchemaError, match="export_sensitive"):
        export_plan(plan, Table(name="members"))
    assert export_plan(plan, Table(name="members", export_sensitive=["token"])).specs


def test_warehouse_shape_drops_hashes_and_adds_tenant():
    plan = export_plan(plan_of({**COLUMNS, "tenant_id": "int"}, tenant_column="tenant_id"),
                       Table(name="members", export_sensitive=["remember_token"]))
    wh = Warehouse(project="hakobu-demo", dataset="dwh", drop_columns=["note"],
                   hash_columns=["email", "phone"])
    wt = warehouse_table(plan, wh)
    names = [s.name for s in wt.specs]
    assert "note" not in names and "remember_token" not in names   # never to the warehouse
    assert "tenant_id" not in names            # the source discriminator; replaced below
    assert wt.primary_key == ("tenant_id", "id")
    assert {s.name: s.bq_type for s in wt.specs}["email"] == "STRING"
    assert wt.hashed == {"email", "phone"}
    batch = pa.table({s.name: pa.array([None], type=s.arrow_type) for s in plan.specs})
    batch = batch.set_column(batch.schema.get_field_index("email"), "email",
                             pa.array(["a@example.com"], type=pa.large_string()))
    out = wt.convert(batch, Hasher(Secret("k")))
    row = out.to_pylist()[0]
    assert row["email"] == hmac.new(b"k", b"a@example.com", hashlib.sha256).hexdigest()
    assert row["phone"] is None and row["tenant_id"] == "acme"
    assert row["_hakobu_tenant_bucket"] == tenant_bucket("acme") < TENANT_BUCKETS


def test_warehouse_refuses_dropping_the_key_and_a_tenant_id_collision():
    plan = plan_of({"id": "bigint", "updated_at": "datetime", "tenant_id": "varchar"})
    with pytest.raises(SchemaError, match="collides"):
        warehouse_table(plan, Warehouse(project="hakobu-demo", dataset="d"))
    assert warehouse_table(plan, Warehouse(project="hakobu-demo", dataset="d",
                                           drop_columns=["tenant_id"])).specs
    with pytest.raises(SchemaError, match="merges on the key"):
        warehouse_table(plan_of(COLUMNS), Warehouse(project="hakobu-demo", dataset="d",
                                                    drop_columns=["id"]))
    with pytest.raises(SchemaError, match="cannot be hashed"):
        warehouse_table(plan_of(COLUMNS), Warehouse(project="hakobu-demo", dataset="d",
                                                    hash_columns=["id"]))


def test_hash_key_missing_or_empty_is_a_clear_error():
    wh = Warehouse(project="hakobu-demo", dataset="d", hash_key_env="HK_KEY")
    with pytest.raises(ConfigError, match="HK_KEY is not set.*nothing is written unhashed"):
        hash_key(wh, environ={})
    with pytest.raises(ConfigError, match="HK_KEY is not set"):
        hash_key(wh, environ={"HK_KEY": ""})
    h = Hasher(hash_key(wh, environ={"HK_KEY": "s3cret"}))
    assert "s3cret" not in repr(h)


def test_shared_read_starts_at_the_earliest_watermark():
    t = dt.datetime(2026, 1, 1, 12)
    assert common_start([]) is None
    assert common_start([(t, 5), None]) is None
    assert common_start([(t, 5), (t, 5)]) == (t, 5)
    assert common_start([(t, 5), (t + dt.timedelta(seconds=1), 1)]) == (t, 5)
    # same cursor, different keys: just below the cursor value, whatever the key order
    assert common_start([(t, "b"), (t, "A")]) == (t - dt.timedelta(microseconds=1), "b")
    assert common_start([(dt.date(2026, 1, 2), 1), (dt.date(2026, 1, 2), 2)])[0] == \
        dt.date(2026, 1, 1)
    assert common_start([(Decimal("3.5"), 1), (Decimal("3.5"), 2)])[0] == Decimal("2.5")


# Issue #11 item 8: credentials-like names are recognised anywhere in the name (one word or
# several, any case), as README.md promises; plain words are not.
CREDENTIALS_ANYWHERE = [
    "authtoken", "refreshtoken", "accesstoken", "tokenhash", "clientsecret", "apisecret",
    "secretkey", "accesskey", "privkey", "pw_hash", "pass_hash", "passcode", "AuthToken",
    "api_key", "apiKey", "otp_secret", "session_key", "encrypted_password", "password_digest",
    "private_key_pem", "x_api_token", "mfa_seed", "X-Api-Key", "userpasswd", "PWD", "apikeys",
    "signingKey", "hmac_key", "ssh_private_key", "webhook_secret", "passphrase", "passkey",
    "salt", "password_salt", "otp", "totp_code", "user_pin", "jwt", "secretary_token",
    "recovery_codes", "aws_access_key_id", "oauth_credentials", "card_cvv",
]
INNOCENT_NAMES = [
    "tokenizer_version", "salty", "passenger_count", "keyword", "monkey", "api_version",
    "access_level", "secretary", "hashtag", "compass", "content_hash", "passport_number",
    "bypass_cache", "session_id", "sort_key", "partition_key", "primary_key_hint", "turkey",
    "hotpot", "spinner", "author", "email_digest", "salty_snacks", "pinned",
]


@pytest.mark.parametrize("name", CREDENTIALS_ANYWHERE)
def test_credentials_are_recognised_anywhere_in_the_name(name):
    assert is_sensitive(name), name
    assert is_sensitive(name, "varchar") and is_sensitive(name, "blob")


@pytest.mark.parametrize("name", INNOCENT_NAMES)
def test_plain_words_containing_parts_of_credentials_are_delivered(name):
    assert not is_sensitive(name), name


@pytest.mark.parametrize("name", ["password_changed_at", "token_expires_at",
                                  "reset_password_sent_at", "secret_rotated_on"])
@pytest.mark.parametrize("data_type", ["datetime", "timestamp", "date"])
def test_a_timestamp_about_a_credential_is_not_one(name, data_type):
    """A temporal column says when, not what: delivered. The same name as text is withheld."""
    assert not is_sensitive(name, data_type)
    assert is_sensitive(name, "varchar") and is_sensitive(name)


def test_export_and_warehouse_withhold_credentials_named_in_one_word():
    plan = plan_of({"id": "bigint", "updated_at": "datetime", "authtoken": "varchar",
                    "clientsecret": "varchar", "privkey": "blob", "pw_hash": "char",
                    "password_changed_at": "datetime", "keyword": "varchar"})
    out = export_plan(plan, Table(name="members"))
    names = [s.name for s in out.specs]
    assert names == ["id", "updated_at", "password_changed_at", "keyword"]
    released = export_plan(plan, Table(name="members", export_sensitive=["AUTHTOKEN"]))
    assert "authtoken" in [s.name for s in released.specs]
    wt = warehouse_table(released, Warehouse(project="hakobu-demo", dataset="d"))
    assert "authtoken" not in [s.name for s in wt.specs]       # never to the warehouse
    assert "password_changed_at" in [s.name for s in wt.specs]


def test_column_policy_says_which_delivered_values_must_go():
    from hakobu.policy import ColumnPolicy

    table = Table(name="members", exclude=["note"], export_sensitive=["remember_token"])
    wh = Warehouse(project="hakobu-demo", dataset="d", drop_columns=["birthday", "email"],
                   hash_columns=["email"])
    p = ColumnPolicy.of(table, wh)
    assert p.customer_removal("NOTE") == "excluded in the tenant file"
    assert p.customer_removal("api_key") == "credential-like"
    assert p.customer_removal("remember_token") is None          # released to the customer
    assert p.customer_removal("old_column") is None               # gone from MySQL: history
    assert p.warehouse_removal("remember_token") == "credential-like"   # never in the warehouse
    assert p.warehouse_removal("birthday") == "drop_columns"
    assert p.warehouse_removal("email") is None                   # hashed wins over dropped
    assert p.warehouse_removal("note") is None                    # other tenants deliver it
    assert p.warehouse_slice_removal("note") == "excluded in the tenant file"
    assert ColumnPolicy().customer_removal("note") is None


def test_a_delivered_temporal_column_with_a_credential_name_is_never_dropped_under_others():
    """A DATETIME `password_changed_at` is delivered (is_sensitive with its type); a tenant
    whose table lacks it must not drop it from the shared warehouse (or a customer table) as
    credential-like: the policy reads the live BigQuery column's type."""
    from hakobu.policy import ColumnPolicy

    p = ColumnPolicy.of(Table(name="members"), Warehouse(project="hakobu-demo", dataset="d"))
    for bq_type in ("DATETIME", "TIMESTAMP", "DATE"):
        assert p.warehouse_removal("password_changed_at", bq_type) is None
        assert p.customer_removal("password_changed_at", bq_type) is None
    assert p.warehouse_removal("password_changed_at", "STRING") == "credential-like"
    assert p.customer_removal("api_token", "STRING") == "credential-like"
