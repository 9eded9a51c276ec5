"""What may leave the source, and in which form: the export policy, applied to a table's plan.

Two destinations receive a tenant's rows — the customer's own dataset and the internal analytics
warehouse — and both are fed from the plan this module returns, so the rules below cannot be
skipped by one path and kept by another:

- Credentials-like columns (passwords and their hashes or digests, salts, tokens, secrets, API,
  access and private keys; recognised anywhere in the name, see `is_sensitive`) are never
  selected from the source at all, unless the tenant file lists them in the table's
  `export_sensitive`. Even then they go to the customer's dataset only: the
  internal warehouse never holds another company's credentials.
- The warehouse drops `drop_columns`, replaces `hash_columns` by a keyed hash (HMAC-SHA256, hex),
  drops the source's own tenant discriminator column and adds `tenant_id` (STRING).

Everything here is pure. The HMAC key is handed in by the caller, who reads it from the
environment at the edge (`hash_key`), and a missing key is an error, never unhashed output.
"""

import dataclasses
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from hakobu.config import Secret, Table, Warehouse
from hakobu.errors import ConfigError, SchemaError
from hakobu.naming import column_name
from hakobu.plan import TablePlan
from hakobu.types import ColumnSpec, dest_schema

# -- credentials-like columns -------------------------------------------------------------------

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# Found anywhere in the name, once it is lower-cased and stripped of everything but letters and
# digits (`AuthToken`, `x_api_token`, `authtoken` and `auth-token` all read `...token...`):
# credentials are named in one word as often as in several (`clientsecret`, `privkey`).
# Each fragment is one that innocent names practically never contain.
SENSITIVE_FRAGMENTS = (
    "passw", "passcode", "passphrase", "passkey", "pwd", "pwhash", "passhash", "pinhash",
    "token", "secret", "credential",
    "apikey", "accesskey", "privkey", "privatekey", "authkey", "signingkey", "encryptionkey",
    "hmackey", "sessionkey", "masterkey", "sshkey", "licensekey", "mfaseed", "otpseed",
)
# Innocent words that contain a fragment; taken out of the name before the fragments are
# looked for (`secretary_token` still reads `token`).
INNOCENT_FRAGMENTS = ("secretar", "secretion", "tokenizer", "bypass", "compass")
# Too short or too common to look for inside other words: whole words only (`salt`, `user_pin`,
# `otp_code`; never `salty`, `spinner` or `hotpot`).
SENSITIVE_WORDS = frozenset({"salt", "salts", "pin", "otp", "totp", "hotp", "jwt", "bearer",
                             "cvv", "cvc", "cvv2"})
SENSITIVE_PAIRS = frozenset({("mfa", "seed"), ("mfa", "code"), ("mfa", "key"),
                             ("recovery", "code"), ("recovery", "codes"), ("backup", "codes")})
# A column of these types cannot hold a credential, whatever its name says: a timestamp says
# when (`password_changed_at`, `token_expires_at`, Devise's `reset_password_sent_at`), not what.
NEVER_CREDENTIAL_TYPES = frozenset({"date", "datetime", "timestamp", "time", "year"})


def column_words(name: str) -> list[str]:
    """`reset_passwordToken2` → ['reset', 'password', 'token', '2']."""
    return [w.lower() for w in _WORDS.findall(name)]


def is_sensitive(name: str, data_type: str | None = None) -> bool:
    """Whether a column looks like it holds a credential (Rails/Devise/Django/Laravel names
    included: encrypted_password, password_digest, reset_password_token, remember_token, ...).

    Errs on the side of withholding — a withheld column is one line of export_sensitive away,
    a leaked credential cannot be taken back — but not on plain words: `keyword`, `monkey`,
    `passenger_count`, `api_version`, `access_level`, `salty`, `secretary` are delivered. With
    the column's MySQL data_type, temporal columns are never credentials (see
    NEVER_CREDENTIAL_TYPES)."""
    if data_type is not None and data_type.lower() in NEVER_CREDENTIAL_TYPES:
        return False
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    for innocent in INNOCENT_FRAGMENTS:
        flat = flat.replace(innocent, "")
    if any(f in flat for f in SENSITIVE_FRAGMENTS):
        return True
    words = column_words(name)
    if any(w in SENSITIVE_WORDS for w in words):
        return True
    return any(pair in SENSITIVE_PAIRS for pair in zip(words, words[1:]))


def export_plan(plan: TablePlan, table: Table) -> TablePlan:
    """The plan without the credentials-like columns the tenant file does not release.

    Applied to every plan before any destination sees it (hakobu.sinks.build_sinks). A withheld
    column is not even selected from the source. A key or cursor column cannot be withheld (rows
    could not be merged or read incrementally without it): that is a SchemaError saying what to do.
    """
    allowed = {c.lower() for c in table.export_sensitive}
    withheld = [s.name for s in plan.specs
                if is_sensitive(s.name, s.info.data_type) and s.name.lower() not in allowed]
    if not withheld:
        return plan
    needed = {*plan.primary_key, *([plan.cursor] if plan.cursor else []),
              *([plan.tenant_column] if plan.tenant_column else [])}
    blocked = [c for c in withheld if c in needed]
    if blocked:
        raise SchemaError(
            f"column(s) {blocked} look like credentials and are never exported, but the table "
            "needs them as primary key, cursor or tenant column", tenant=plan.tenant,
            table=plan.table,
            hint=f"if they hold no secret, list them under export_sensitive: {blocked} for this "
                 "table in the tenant file")
    return dataclasses.replace(plan, specs=tuple(s for s in plan.specs if s.name not in withheld))


def withheld_columns(plan: TablePlan, exported: TablePlan) -> list[str]:
    kept = {s.name for s in exported.specs}
    return [s.name for s in plan.specs if s.name not in kept]


# -- policy changes: what happens to values delivered before ------------------------------------


@dataclass(frozen=True)
class ColumnPolicy:
    """Why a column BigQuery already holds must lose its values, now that a policy withholds it.

    The rules above decide what the next rows carry; these decide what happens to the rows
    delivered before, when a column is excluded in the tenant file, loses its export_sensitive
    release, becomes credential-like (a rename, or this module's rule widening in a new
    version), or is added to the warehouse's drop_columns. The sinks ask, for each column of a
    target table that the run no longer delivers (hakobu.sinks); a column that is simply gone
    from MySQL gets no reason and stays, with its history. Pure.
    """

    excluded: frozenset[str] = frozenset()     # the table's exclude, lower case
    released: frozenset[str] = frozenset()     # the table's export_sensitive, lower case
    dropped: frozenset[str] = frozenset()      # the warehouse's drop_columns not also hashed

    @classmethod
    def of(cls, table: Table | None, warehouse: Warehouse | None = None) -> "ColumnPolicy":
        """The lists hold MySQL names; the columns asked about are BigQuery's, so each name is
        held in both forms (hakobu.naming: `my col` is the BigQuery column `my_col_7a2881`)."""
        hashed = {c.lower() for c in warehouse.hash_columns} if warehouse else set()
        return cls(
            excluded=_both(table.exclude) if table else frozenset(),
            released=_both(table.export_sensitive) if table else frozenset(),
            dropped=_both(c for c in warehouse.drop_columns if c.lower() not in hashed)
            if warehouse else frozenset())

    def customer_removal(self, name: str, bq_type: str | None = None) -> str | None:
        """A column of the customer's table that must go, with its values. `bq_type`: the
        BigQuery column's type — a DATE/DATETIME/TIMESTAMP column is never a credential, as
        its MySQL column was not (is_sensitive), so such a column another tenant still delivers
        is not dropped under it."""
        if name.lower() in self.excluded:
            return "excluded in the tenant file"
        if is_sensitive(name, _temporal(bq_type)) and name.lower() not in self.released:
            return "credential-like"
        return None

    def warehouse_removal(self, name: str, bq_type: str | None = None) -> str | None:
        """A warehouse column no tenant may deliver any more: it goes with every tenant's values
        (the warehouse never holds credentials, whatever a tenant file releases)."""
        if is_sensitive(name, _temporal(bq_type)):
            return "credential-like"
        if name.lower() in self.dropped:
            return "drop_columns"
        return None

    def warehouse_slice_removal(self, name: str) -> str | None:
        """A warehouse column this tenant no longer delivers while others may: only this
        tenant's values go."""
        return "excluded in the tenant file" if name.lower() in self.excluded else None


def _both(names: Iterable[str]) -> frozenset[str]:
    """Lower-case MySQL names and the BigQuery names they are delivered under."""
    return frozenset(x.lower() for c in names for x in (c, column_name(c)))


def _temporal(bq_type: str | None) -> str | None:
    """The MySQL-side kind is_sensitive exempts, read back from a BigQuery column type."""
    return "datetime" if bq_type and bq_type.upper() in {"DATE", "DATETIME", "TIMESTAMP"} else None


# -- the internal warehouse ---------------------------------------------------------------------

TENANT_COLUMN = "tenant_id"
BUCKET_COLUMN = "_hakobu_tenant_bucket"
TENANT_BUCKETS = 4000   # integer-range partitions of a warehouse table (BigQuery allows 10,000)
WAREHOUSE_EXTRA = ((TENANT_COLUMN, "STRING"), (BUCKET_COLUMN, "INT64"))


def tenant_bucket(tenant: str) -> int:
    """The warehouse partition of a tenant: stable, spread, the same in every process. Tenants'
    MERGEs then touch different partitions, so BigQuery does not serialise them against each
    other (concurrent DML on one partition can conflict)."""
    digest = hashlib.sha256(tenant.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % TENANT_BUCKETS


class Hasher:
    """HMAC-SHA256 with the warehouse key; its repr never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: Secret):
        value = key.reveal()
        if not value:
            raise ConfigError("the warehouse hash key is empty",
                              hint="set it to a long random secret (e.g. `openssl rand -hex 32`)")
        self._key = value.encode("utf-8")

    def __repr__(self) -> str:
        return "Hasher('****')"

    def hex(self, value) -> str | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, str):
            data = value.encode("utf-8")
        elif hasattr(value, "isoformat"):
            data = value.isoformat().encode()
        else:
            data = str(value).encode("utf-8")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def column(self, values: pa.ChunkedArray | pa.Array) -> pa.Array:
        return pa.array([self.hex(v) for v in values.to_pylist()], type=pa.large_string())


def hash_key(warehouse: Warehouse, environ=os.environ) -> Secret:
    """The HMAC key, read from the variable the warehouse file names, at the moment it is needed."""
    name = warehouse.hash_key_env
    if not environ.get(name):
        raise ConfigError(
            f"warehouse {warehouse.project}.{warehouse.dataset}: environment variable {name} is "
            "not set, so hash_columns cannot be hashed (nothing is written unhashed)",
            hint=f"export {name}=<a long random secret, the same on every run so hashes keep "
                 "joining>, or set enabled: false in tenants/warehouse.yaml")
    return Secret(environ[name])


@dataclass(frozen=True)
class WarehouseTable:
    """How one tenant's table lands in the warehouse: columns, merge key, the per-batch change."""

    tenant: str
    table: str                           # the BigQuery table (hakobu.naming)
    specs: tuple[ColumnSpec, ...]        # delivered columns (hashed ones as STRING)
    hashed: frozenset[str]               # MySQL names
    source_names: tuple[str, ...]        # the customer plan's column each spec is read from
    primary_key: tuple[str, ...]         # (tenant_id, *source primary key), BigQuery names
    bucket: int

    @property
    def extra(self) -> list[tuple[str, str]]:
        return list(WAREHOUSE_EXTRA)

    @property
    def schema(self) -> pa.Schema:
        return dest_schema(list(self.specs)).append(
            pa.field(TENANT_COLUMN, pa.large_string())).append(pa.field(BUCKET_COLUMN, pa.int64()))

    def convert(self, batch: pa.Table, hasher: "Hasher | None") -> pa.Table:
        """The customer batch as the warehouse receives it: dropped columns gone, hashed columns
        replaced by their HMAC, tenant_id and the tenant's partition added."""
        if self.hashed and hasher is None:
            raise ConfigError("internal: hash columns without a key")  # build_sinks prevents it
        arrays = []
        for spec, src in zip(self.specs, self.source_names):
            col = batch.column(src)
            arrays.append(hasher.column(col) if src in self.hashed else col)
        n = batch.num_rows
        arrays.append(pa.array([self.tenant] * n, type=pa.large_string()))
        arrays.append(pa.array([self.bucket] * n, type=pa.int64()))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def warehouse_table(plan: TablePlan, warehouse: Warehouse) -> WarehouseTable:
    """The warehouse form of an (already export-filtered) customer plan. Pure."""
    drop = {c.lower() for c in warehouse.drop_columns}
    hashed = {c.lower() for c in warehouse.hash_columns}
    # The source's discriminator column (shared tables) holds one value per tenant: the
    # warehouse's tenant_id replaces it, in the columns and in the key ((tenant_id, id) stays
    # unique within a tenant's slice when the source key is (tenant column, id)).
    discriminator = plan.tenant_column
    key = tuple(k for k in plan.primary_key if k != discriminator)
    if not key and not plan.full_replace:     # (a table without a key is replaced whole)
        raise SchemaError("the primary key is only the tenant column: nothing identifies a row "
                          "in the warehouse", tenant=plan.tenant, table=plan.table,
                          hint="declare primary_key: [...] for this table in the tenant file")
    specs, names, hashed_names = [], [], set()
    for s in plan.specs:
        low = s.name.lower()
        if s.name == discriminator:
            continue
        if is_sensitive(s.name, s.info.data_type) or (low in drop and low not in hashed):
            if s.name in plan.primary_key:
                raise SchemaError(
                    f"primary key column {s.name!r} cannot be dropped from the warehouse",
                    tenant=plan.tenant, table=plan.table,
                    hint="take it out of drop_columns in tenants/warehouse.yaml (the warehouse "
                         "merges on the key)")
            continue
        if s.bq_name.lower() in (TENANT_COLUMN, BUCKET_COLUMN):
            raise SchemaError(
                f"column {s.name!r} collides with the warehouse's own {TENANT_COLUMN!r} column",
                tenant=plan.tenant, table=plan.table,
                hint=f"add {s.name} to drop_columns in tenants/warehouse.yaml")
        if low in hashed:
            if s.name in key:
                # the warehouse merges, and hakobu.checksums compares, on the source's key values
                raise SchemaError(
                    f"primary key column {s.name!r} cannot be hashed in the warehouse: rows are "
                    "merged and reconciled on their key", tenant=plan.tenant, table=plan.table,
                    hint="take it out of hash_columns in tenants/warehouse.yaml (a key that is "
                         "itself personal data needs a surrogate key in the source)")
            s = dataclasses.replace(s, arrow_type=pa.large_string(), bq_type="STRING",
                                    staging_bq_type="STRING")
            hashed_names.add(s.name)
        specs.append(s)
        names.append(s.name)
    return WarehouseTable(tenant=plan.tenant, table=plan.bq_table, specs=tuple(specs),
                          hashed=frozenset(hashed_names), source_names=tuple(names),
                          primary_key=(TENANT_COLUMN, *(plan.bq(k) for k in key)),
                          bucket=tenant_bucket(plan.tenant))


def any_hashed(plans: Iterable[TablePlan], warehouse: Warehouse) -> bool:
    hashed = {c.lower() for c in warehouse.hash_columns}
    return any(s.name.lower() in hashed for p in plans for s in p.specs)
