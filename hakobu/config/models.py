"""The configuration's typed models: clusters, tenants and their tables, the warehouse, and
the loaded `Config` (frozen pydantic models and dataclasses, parsed once at the edge by
hakobu.config.load)."""

import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      field_validator, model_validator)

from hakobu.errors import ConfigError
from hakobu.naming import live_view, table_name

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CLUSTERS_FILE = "clusters.yaml"
WAREHOUSE_FILE = "warehouse.yaml"
DATASETS_FILE = "datasets.yaml"
RESERVED_FILES = {CLUSTERS_FILE, WAREHOUSE_FILE, DATASETS_FILE}

_IDENT = r"^[A-Za-z_][A-Za-z0-9_$]*$"
_TENANT_ID = r"^[a-z][a-z0-9_]{0,62}$"
_BQ_DATASET = r"^[A-Za-z0-9_]{1,1024}$"
_BQ_PROJECT = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
Identifier = Annotated[str, Field(pattern=_IDENT, max_length=64)]


def _yaml_scalar(value: Any) -> Any:
    """YAML reads `2024`, `1e3`, `on` or `null` unquoted as a number, a bool or nothing: a name
    must be written in quotes then (converting back could not give `1e3` or `On` again)."""
    if value is not None and not isinstance(value, (str, dict, list)):
        raise ValueError(f"{value!r} was read by YAML as a {type(value).__name__}; write the "
                         "name in quotes")
    return value


def _mysql_name(value: str) -> str:
    """MySQL's own rules for a table or column name: 1 to 64 characters of the Basic
    Multilingual Plane but NUL, not ending in a space. Nothing else is refused here: the source
    quotes every name (quote_ident) and BigQuery gets the name hakobu.naming gives it."""
    if not 1 <= len(value) <= 64:
        raise ValueError(f"{value!r}: MySQL names have 1 to 64 characters")
    if "\x00" in value or any(ord(c) > 0xFFFF for c in value):
        raise ValueError(f"{value!r}: MySQL names cannot hold NUL or characters outside the "
                         "Basic Multilingual Plane (such as emoji)")
    if value.endswith(" "):
        raise ValueError(f"{value!r}: MySQL names cannot end with a space")
    return value


# a table or column as MySQL names it: only ever compared with reflected names and quoted on
# the source, mapped for BigQuery (hakobu.naming), never pasted
MySQLName = Annotated[str, BeforeValidator(lambda v: _yaml_scalar(v)),
                      AfterValidator(_mysql_name)]
ColumnName = MySQLName


def config_dir() -> Path:
    """The directory holding tenants/ and permissions.csv (HAKOBU_CONFIG_DIR or the repo root)."""
    value = os.environ.get("HAKOBU_CONFIG_DIR")
    return Path(value).resolve() if value else REPO_ROOT


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Tokyo") from exc
    return value


class ReadBudget(_Model):
    """How hard hakobu may read a source cluster (see resources/pressure.py)."""

    pages_per_second: int | None = Field(default=None, gt=0)
    counter: Literal["physical", "logical"] = "physical"
    max_connections: int = Field(default=2, ge=1, le=64)
    window: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")


FULL_READ_ENV = "HAKOBU_FULL_READ_BELOW_KIB"
FULL_READ_KIB = 1024
FULL_READ_MAX_KIB = 1_048_576          # 1 GiB: the largest limit the YAML setting takes


def full_read_default() -> int:
    raw = os.environ.get(FULL_READ_ENV, "")
    try:
        value = int(raw) if raw.strip() else FULL_READ_KIB
    except ValueError:
        value = -1
    if not 0 <= value <= FULL_READ_MAX_KIB:
        raise ConfigError(f"{FULL_READ_ENV}={raw!r} is not a whole number of KiB from 0 to "
                          f"{FULL_READ_MAX_KIB:,}",
                          hint=f"unset it (default {FULL_READ_KIB}) or set e.g. "
                               f"{FULL_READ_ENV}=0 (never read a cursor table whole)")
    return value


class Cluster(_Model):
    name: str
    host: str
    port: int = Field(default=3306, ge=1, le=65535)
    user: str
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timezone: str = "UTC"
    zero_dates: Literal["to_null", "fail"] = "to_null"
    read_budget: ReadBudget = ReadBudget()
    lag_seconds: int = Field(default=5, ge=0)
    verify_every: int = Field(default=7, ge=1, le=366)   # nights per full content rotation
    # A nightly table with a cursor whose tenant rows take less than this (the server's
    # estimate: information_schema) is read whole every night, merged with deletion of vanished
    # rows: one scan of a few pages costs less than the incremental passes and the nightly key
    # and content checks, each of which pays its own index descents (bench/analysis.md, the
    # night). 0: always incremental. The default's default comes from HAKOBU_FULL_READ_BELOW_KIB
    # (the test suite sets 0, so its small tables exercise the incremental path).
    full_read_below_kib: int = Field(default_factory=lambda: full_read_default(), ge=0,
                                     le=FULL_READ_MAX_KIB)
    # what `hakobu status` expects a tenant's run to take when nothing measured says better
    # (no run history, no previous delivery: a new tenant's first night); hakobu.tonight
    default_run_seconds: int = Field(default=600, ge=1, le=86_400)

    _zone = field_validator("timezone")(_check_zone)

    def password(self) -> "Secret":
        """The password, read from the environment at the moment it is needed."""
        if self.password_env is None:
            return Secret("")
        if self.password_env not in os.environ:
            raise ConfigError(
                f"cluster {self.name!r}: environment variable {self.password_env} is not set",
                hint=f"export {self.password_env}=... (the password of MySQL user {self.user!r})")
        return Secret(os.environ[self.password_env])


class Secret:
    """A secret whose str() and repr() never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__


class Source(_Model):
    """Where a tenant's rows live: its own schema, or shared tables with a discriminator column."""

    schema_: Identifier = Field(alias="schema")
    tenant_column: ColumnName | None = None
    tenant_value: int | str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("tenant_value", mode="before")
    @classmethod
    def _plain_value(cls, value: Any) -> Any:
        # YAML reads `yes`/`true` as a bool and `1.0` as a float, which pydantic would quietly
        # turn into 1: a tenant_value is an integer or a string, exactly as written
        if isinstance(value, (bool, float)):
            raise ValueError(f"{value!r} is a {type(value).__name__}; write the tenant's "
                             "integer id unquoted, or a string id in quotes")
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> "Source":
        if (self.tenant_column is None) != (self.tenant_value is None):
            raise ValueError("shared tables need both tenant_column and tenant_value "
                             "(schema-per-tenant needs neither)")
        return self

    @property
    def shared(self) -> bool:
        return self.tenant_column is not None


class Destination(_Model):
    project: str = Field(pattern=_BQ_PROJECT)
    dataset: str = Field(pattern=_BQ_DATASET)
    location: str = "US"


class Schedule(_Model):
    cron: str
    timezone: str = "UTC"

    _zone = field_validator("timezone")(_check_zone)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value) or len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron expression (e.g. '0 2 * * *')")
        # what Dagster's ScheduleDefinition refuses on top (dagster._utils.schedules): a
        # schedule it refuses would stop the whole code location from loading
        expanded, *_ = croniter.expand(value)
        if len(expanded) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron expression (e.g. '0 2 * * *')")
        if expanded[3] == [2] and len(expanded[2]) == 1 and expanded[2][0] in {30, 31}:
            raise ValueError(f"{value!r} never runs: February has no day {expanded[2][0]}")
        return value


class Table(_Model):
    name: MySQLName                   # any MySQL name; its BigQuery name: hakobu.naming
    primary_key: list[ColumnName] | None = None
    cursor: ColumnName | None = None
    exclude: list[ColumnName] = []
    chunk_rows: int = Field(default=50_000, ge=1, le=1_000_000)
    query_rows: int | None = Field(default=None, ge=1, le=10_000_000)
    without_primary_key: Literal["refuse", "replace"] = "refuse"
    zero_dates: Literal["to_null", "fail"] | None = None
    export_sensitive: list[ColumnName] = []
    verify_every: int | None = Field(default=None, ge=1, le=366)   # default: the cluster's
    full_read_below_kib: int | None = Field(default=None, ge=0, le=FULL_READ_MAX_KIB)  # the cluster's
    # nightly: the nightly job reads it by keyset queries. realtime: `hakobu stream` follows
    # the cluster's binlog into a change log and merges it every merge_every_minutes (at least
    # 10: at most 144 MERGEs of the table a day, far inside BigQuery's 1,500 table writes;
    # docs/realtime.md); the nightly job then only verifies it.
    delivery: Literal["nightly", "realtime"] = "nightly"
    merge_every_minutes: int = Field(default=10, ge=10, le=1440)
    # realtime: the Dagster check `realtime_lag` fails (ERROR) when the stream's checkpoint is
    # older than this, or a change waits longer than merge_every_minutes + this for its merge
    max_lag_minutes: int = Field(default=5, ge=1, le=1440)

    @model_validator(mode="after")
    def _consistent(self) -> "Table":
        if self.delivery == "realtime" and self.without_primary_key == "replace":
            raise ValueError("delivery: realtime needs a primary key (each change is merged "
                             "on it); without_primary_key: replace cannot stream — add a "
                             "primary key in MySQL or declare primary_key: [...]")
        if self.query_rows is not None and self.query_rows < self.chunk_rows:
            raise ValueError(f"query_rows ({self.query_rows}) must be at least chunk_rows "
                             f"({self.chunk_rows}): a query streams its rows in chunks")
        overlap = set(self.exclude) & set(self.primary_key or [])
        if overlap:
            raise ValueError(f"primary key column(s) {sorted(overlap)} cannot be excluded")
        if self.cursor and self.cursor in self.exclude:
            raise ValueError(f"cursor column {self.cursor!r} cannot be excluded")
        return self


class Tenant(_Model):
    tenant: str = Field(pattern=_TENANT_ID)
    cluster: str
    source: Source
    destination: Destination
    schedule: Schedule
    deliver_by: time
    tables: list[Table] = Field(min_length=1)
    file: str = ""

    @field_validator("deliver_by", mode="before")
    @classmethod
    def _deliver_by(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML 1.1 reads 06:30 as a sexagesimal int
            value = f"{value // 60:02d}:{value % 60:02d}"
        if isinstance(value, str) and not re.fullmatch(r"\d{2}:\d{2}", value):
            raise ValueError("use HH:MM in the schedule's time zone, e.g. '06:00'")
        return value

    @model_validator(mode="after")
    def _unique_tables(self) -> "Tenant":
        names = [t.name for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"table(s) listed twice: {dupes}")
        self._no_live_view_clash()
        return self

    def _no_live_view_clash(self) -> None:
        """A realtime table's live view (`<table>_live`, hakobu.naming.live_view) must not be
        the BigQuery name of another of the tenant's tables (names compared without case)."""
        bq = {table_name(t.name).lower(): t.name for t in self.tables}
        for t in self.tables:
            view = live_view(table_name(t.name)).lower()
            if t.delivery == "realtime" and view in bq:
                raise ValueError(f"realtime table {t.name!r} shows its latest state in the view "
                                 f"{view!r}, which is the BigQuery table of {bq[view]!r}: "
                                 "rename one of them in MySQL, or deliver it nightly")

    @property
    def realtime_tables(self) -> list[str]:
        return [t.name for t in self.tables if t.delivery == "realtime"]

    @property
    def nightly_tables(self) -> list[str]:
        return [t.name for t in self.tables if t.delivery == "nightly"]

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise ConfigError(f"unknown table {name!r}", tenant=self.tenant,
                          hint=f"tables of this tenant: {', '.join(t.name for t in self.tables)}")


class ExtraDataset(_Model):
    project: str = Field(pattern=_BQ_PROJECT)
    dataset: str = Field(pattern=_BQ_DATASET)
    location: str = "US"


class Warehouse(_Model):
    """The internal analytics warehouse: all tenants' tables in one dataset."""

    project: str = Field(pattern=_BQ_PROJECT)
    dataset: str = Field(pattern=_BQ_DATASET)
    location: str = "US"
    enabled: bool = True
    hash_key_env: str = Field(default="HAKOBU_WAREHOUSE_HASH_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    drop_columns: list[ColumnName] = []
    hash_columns: list[ColumnName] = []
    # the merge step (hakobu.warehouse_merge) applies every tenant's pending slices every this
    # many minutes: at most 1440 / merge_every_minutes MERGEs per warehouse table a day
    merge_every_minutes: int = Field(default=5, ge=2, le=60)
