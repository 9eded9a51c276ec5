"""Tenant and cluster configuration: parsed once at the edge into frozen, typed models.

Every error names the file and line and says what to do; all errors of a load are collected and
raised together (`ConfigErrors`), so a user fixes a broken config in one pass.

Layout of a config directory (HAKOBU_CONFIG_DIR, default: the repository root):

    tenants/clusters.yaml     source clusters
    tenants/<tenant>.yaml     one file per tenant
    tenants/warehouse.yaml    the internal analytics warehouse (optional)
    permissions.csv           dataset grants
"""

import os
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, field_validator, model_validator)

from hakobu.errors import ConfigError, ConfigErrors
from hakobu.naming import collisions, table_name

REPO_ROOT = Path(__file__).resolve().parent.parent
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
        from croniter import croniter

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

    @model_validator(mode="after")
    def _consistent(self) -> "Table":
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
        return self

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


@dataclass(frozen=True)
class ManagedDataset:
    """A BigQuery dataset whose grants permissions.csv manages."""

    project: str
    dataset: str
    location: str
    kind: Literal["customer", "warehouse", "extra"]
    tenant: str | None = None

    @property
    def id(self) -> str:
        return f"{self.project}.{self.dataset}"


@dataclass(frozen=True)
class BrokenTenant:
    """A tenant file left out of a Config loaded with `isolate=True`, and why (every error with
    its file and line). The tenant id is the file's name: the file itself may not say."""

    tenant: str
    file: str
    errors: tuple[ConfigError, ...]

    def describe(self) -> str:
        return "; ".join(str(e) for e in self.errors)


@dataclass(frozen=True)
class Config:
    root: Path
    clusters: dict[str, Cluster]
    tenants: dict[str, Tenant]
    warehouse: Warehouse | None = None
    extra_datasets: tuple[ExtraDataset, ...] = ()
    # tenant id → {key path: line} of its file, so later checks (hakobu validate against the
    # sources) can still name the line they are about
    lines: dict[str, dict[tuple, int]] = field(default_factory=dict, compare=False, repr=False)
    # tenant files left out (load_config(isolate=True)); empty in a strict load
    broken: tuple[BrokenTenant, ...] = ()

    def where(self, tenant_id: str, *loc) -> str:
        """`file:line` of a key of a tenant's file, e.g. where('a', 'tables', 0, 'primary_key')
        (the nearest enclosing key that is written, when that one is not)."""
        t = self.tenants[tenant_id]
        return f"{t.file}:{_line_of(self.lines.get(tenant_id, {}), tuple(loc))}"

    def table_where(self, tenant_id: str, table: str, key: str | None = None) -> str:
        """`file:line` of a table's entry (or of one of its keys) in the tenant's file."""
        t = self.tenants[tenant_id]
        i = next((i for i, x in enumerate(t.tables) if x.name == table), None)
        if i is None:
            return self.where(tenant_id, "tables")
        return self.where(tenant_id, "tables", i, *([key] if key else []))

    @property
    def permissions_file(self) -> Path:
        return self.root / "permissions.csv"

    def managed_datasets(self) -> dict[str, ManagedDataset]:
        """Every dataset permissions.csv may name, keyed by 'project.dataset'."""
        out: dict[str, ManagedDataset] = {}
        for t in self.tenants.values():
            d = t.destination
            out[f"{d.project}.{d.dataset}"] = ManagedDataset(d.project, d.dataset, d.location,
                                                             "customer", t.tenant)
        if self.warehouse is not None:
            w = self.warehouse
            out[f"{w.project}.{w.dataset}"] = ManagedDataset(w.project, w.dataset, w.location,
                                                             "warehouse")
        for e in self.extra_datasets:
            out.setdefault(f"{e.project}.{e.dataset}",
                           ManagedDataset(e.project, e.dataset, e.location, "extra"))
        return out

    def tenant(self, tenant_id: str) -> Tenant:
        try:
            return self.tenants[tenant_id]
        except KeyError:
            for b in self.broken:
                if b.tenant == tenant_id:
                    raise ConfigErrors([ConfigError(
                        f"tenant {tenant_id!r} is left out: {b.file} is invalid",
                        hint="fix the file (`hakobu validate` lists every problem); the other "
                             "tenants are not affected"), *b.errors]) from None
            raise ConfigError(f"unknown tenant {tenant_id!r}",
                              hint=f"tenants in {self.root / 'tenants'}: "
                                   f"{', '.join(sorted(self.tenants)) or '(none)'}") from None

    def cluster_of(self, tenant: Tenant) -> Cluster:
        return self.clusters[tenant.cluster]


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


def _read_yaml(path: Path, errors: list[ConfigError]) -> tuple[Any, dict[tuple, int]] | None:
    """Parse a YAML file; return its data and a map from key path to 1-based line."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        errors.append(ConfigError(f"{path}:{line}: malformed YAML: {exc.problem or exc}",
                                  hint="fix the syntax at that line"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(f"{path}: cannot read: {exc}"))
        return None
    lines: dict[tuple, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines[child] = key.start_mark.line + 1
            _index_lines(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, path + (i,), lines)


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple("schema" if p == "schema_" else p for p in loc)
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _validation_errors(path: Path, exc: ValidationError, lines: dict[tuple, int],
                       prefix: tuple = ()) -> list[ConfigError]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        field = ".".join(str(p) for p in loc if p != "__root__") or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the tenant-file reference in README.md"
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append(ConfigError(f"{path}:{_line_of(lines, loc)}: {field}: {msg}"))
    return out


_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, where: str, errors: list[ConfigError]) -> Any:
    """Expand ${VAR} and ${VAR:-default} in cluster endpoints (not secrets: see password_env)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, where, errors) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        errors.append(ConfigError(f"{where}: environment variable {name} is not set",
                                  hint=f"export {name}=... or write ${{{name}:-default}}"))
        return ""

    return _ENV_REF.sub(repl, value)


def _load_clusters(path: Path, errors: list[ConfigError]) -> dict[str, Cluster]:
    if not path.exists():
        errors.append(ConfigError(f"{path}: missing",
                                  hint="create it with a 'clusters:' mapping (see README.md)"))
        return {}
    parsed = _read_yaml(path, errors)
    if parsed is None:
        return {}
    data, lines = parsed
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), dict):
        errors.append(ConfigError(f"{path}:1: expected a top-level 'clusters:' mapping"))
        return {}
    extra = set(data) - {"clusters"}
    for key in sorted(extra):
        errors.append(ConfigError(f"{path}:{_line_of(lines, (key,))}: {key}: unknown key"))
    clusters = {}
    for name, body in data["clusters"].items():
        loc = ("clusters", name)
        if not isinstance(body, dict):
            errors.append(ConfigError(f"{path}:{_line_of(lines, loc)}: clusters.{name}: "
                                      "expected a mapping"))
            continue
        if "password" in body:
            errors.append(ConfigError(
                f"{path}:{_line_of(lines, loc + ('password',))}: clusters.{name}.password: "
                "passwords never go in files", hint="use password_env: NAME_OF_ENV_VARIABLE"))
            continue
        before = len(errors)
        body = _interpolate(body, f"{path}:{_line_of(lines, loc)}", errors)
        if len(errors) > before:
            continue
        try:
            clusters[name] = Cluster(name=name, **body)
        except ValidationError as exc:
            errors.extend(_validation_errors(path, exc, lines, loc))
    return clusters


def load_tenant_file(path: Path, clusters: dict[str, Cluster],
                     errors: list[ConfigError], lines_out: dict | None = None) -> Tenant | None:
    parsed = _read_yaml(path, errors)
    if parsed is None:
        return None
    data, lines = parsed
    if lines_out is not None:
        lines_out.update(lines)
    if not isinstance(data, dict):
        errors.append(ConfigError(f"{path}:1: expected a mapping with tenant, cluster, source, "
                                  "destination, schedule, deliver_by and tables"))
        return None
    clashes = _table_name_collisions(path, data, lines)
    try:
        tenant = Tenant(**data, file=str(path))
    except ValidationError as exc:
        errors.extend(_validation_errors(path, exc, lines) + clashes)
        return None
    if clashes:
        errors.extend(clashes)
        return None
    if tenant.cluster not in clusters:
        errors.append(ConfigError(
            f"{path}:{_line_of(lines, ('cluster',))}: cluster: unknown cluster {tenant.cluster!r}",
            hint=f"declare it in tenants/{CLUSTERS_FILE} (known: {', '.join(sorted(clusters))})"))
        return None
    if path.stem != tenant.tenant:
        errors.append(ConfigError(
            f"{path}:{_line_of(lines, ('tenant',))}: tenant: id {tenant.tenant!r} differs from "
            f"the file name", hint=f"rename the file to {tenant.tenant}.yaml"))
        return None
    return tenant


def _table_name_collisions(path: Path, data: dict, lines: dict) -> list[ConfigError]:
    """Tables of one tenant file that would land in one BigQuery table (hakobu.naming, compared
    without case: a dataset can be case-insensitive, the emulator's is). Read from the raw
    file, so they are reported beside any other error of it."""
    tables = data.get("tables")
    names = [(i, t["name"]) for i, t in enumerate(tables if isinstance(tables, list) else [])
             if isinstance(t, dict) and isinstance(t.get("name"), str)]
    out = []
    for bq, originals in collisions([n for _, n in names], table_name):
        i = next(i for i, n in names if n == originals[-1])
        out.append(ConfigError(
            f"{path}:{_line_of(lines, ('tables', i, 'name'))}: tables.{i}.name: tables "
            f"{', '.join(repr(o) for o in originals)} would all be delivered as BigQuery table "
            f"{bq!r} (table names are compared without case: a dataset can be "
            "case-insensitive)", hint="deliver only one of them from this tenant file"))
    return out


def load_config(root: Path | None = None, *, isolate: bool = False) -> Config:
    """Load and validate every file under root/tenants; raise ConfigErrors listing all problems.

    With `isolate` (the Dagster code location, `hakobu status`, the commands about one tenant)
    a problem of a tenant file leaves that tenant out instead (`Config.broken`, each with its
    errors), so one tenant's broken file never takes the other tenants' schedules down. A
    conflict between tenant files (one dataset for two tenants, two tenants reading the same
    rows) leaves out every tenant involved: which file is wrong cannot be known, and
    delivering either could put one customer's rows in another's dataset. Problems of the
    shared files (clusters.yaml, warehouse.yaml, datasets.yaml) fail closed — ConfigErrors,
    whatever `isolate` says: every tenant depends on them, and without warehouse.yaml hakobu
    could not even tell a customer's dataset from the warehouse's."""
    root = Path(root) if root else config_dir()
    tdir = root / "tenants"
    if not tdir.is_dir():
        raise ConfigErrors([ConfigError(f"{tdir}: no tenants directory",
                                        hint="set HAKOBU_CONFIG_DIR to a directory with tenants/")])
    cluster_errors: list[ConfigError] = []
    clusters = _load_clusters(tdir / CLUSTERS_FILE, cluster_errors)
    files: dict[str, list[ConfigError]] = {}    # tenant file → its own errors
    tenants: dict[str, Tenant] = {}
    all_lines: dict[str, dict[tuple, int]] = {}
    for path in sorted(tdir.glob("*.y*ml")):
        if path.name in RESERVED_FILES or path.suffix not in {".yaml", ".yml"}:
            continue
        lines: dict[tuple, int] = {}
        errs = files.setdefault(str(path), [])
        tenant = load_tenant_file(path, clusters, errs, lines)
        if tenant is None:
            continue
        if tenant.tenant in tenants:
            err = ConfigError(f"{path}:1: tenant {tenant.tenant!r} is also defined in "
                              f"{tenants[tenant.tenant].file}")
            errs.append(err)
            files[tenants[tenant.tenant].file].append(err)
            continue
        tenants[tenant.tenant] = tenant
        all_lines[tenant.tenant] = lines
    warehouse_errors: list[ConfigError] = []
    warehouse = _load_single(tdir / WAREHOUSE_FILE, "warehouse", Warehouse, warehouse_errors)
    conflicts: list[tuple[ConfigError, set[str]]] = []      # (error, the tenants involved)
    own_datasets = _check_datasets(tenants, all_lines, warehouse, tdir / WAREHOUSE_FILE,
                                   conflicts)
    _check_shared_sources(own_datasets, all_lines, clusters, conflicts)
    _check_table_names(own_datasets, all_lines, warehouse, conflicts)
    dataset_errors: list[ConfigError] = []
    extras = _load_list(tdir / DATASETS_FILE, "datasets", ExtraDataset, dataset_errors)
    shared = cluster_errors + warehouse_errors + dataset_errors
    own = list(dict.fromkeys(e for errs in files.values() for e in errs))
    if shared or (not isolate and (own or conflicts)):
        raise ConfigErrors(cluster_errors + own + warehouse_errors + [e for e, _ in conflicts]
                           + dataset_errors)
    for err, involved in conflicts:
        for tid in sorted(involved):
            files[tenants[tid].file].append(err)
    broken = tuple(BrokenTenant(Path(f).stem, f, tuple(dict.fromkeys(errs)))
                   for f, errs in files.items() if errs)
    left_out = {b.file for b in broken}
    kept = {t: x for t, x in tenants.items() if x.file not in left_out}
    return Config(root=root, clusters=clusters, tenants=kept, warehouse=warehouse,
                  extra_datasets=tuple(extras), lines={t: all_lines[t] for t in kept},
                  broken=broken)


def _load_single(path: Path, key: str, model: type[_Model], errors: list[ConfigError]):
    """An optional file holding one `key:` mapping."""
    if not path.exists():
        return None
    parsed = _read_yaml(path, errors)
    if parsed is None:
        return None
    data, lines = parsed
    if not isinstance(data, dict) or set(data) != {key} or not isinstance(data[key], dict):
        errors.append(ConfigError(f"{path}:1: expected exactly one top-level '{key}:' mapping"))
        return None
    try:
        return model(**data[key])
    except ValidationError as exc:
        errors.extend(_validation_errors(path, exc, lines, (key,)))
        return None


def _load_list(path: Path, key: str, model: type[_Model], errors: list[ConfigError]) -> list:
    """An optional file holding one `key:` list of mappings."""
    if not path.exists():
        return []
    parsed = _read_yaml(path, errors)
    if parsed is None:
        return []
    data, lines = parsed
    if not isinstance(data, dict) or set(data) != {key} or not isinstance(data[key], list):
        errors.append(ConfigError(f"{path}:1: expected exactly one top-level '{key}:' list"))
        return []
    out = []
    for i, item in enumerate(data[key]):
        try:
            out.append(model(**item) if isinstance(item, dict) else model.model_validate(item))
        except ValidationError as exc:
            errors.extend(_validation_errors(path, exc, lines, (key, i)))
    return out


def _dataset_key(project: str, dataset: str) -> tuple[str, str]:
    """Two dataset ids that BigQuery may take for one. Dataset names are case-sensitive by
    default but case-insensitive in datasets created so (`is_case_insensitive`), and projects
    are lower-case: names that differ only in case are treated as one dataset."""
    return project.lower(), dataset.lower()


Conflicts = list[tuple[ConfigError, set[str]]]    # an error and the tenants it involves


def _check_datasets(tenants: dict[str, Tenant], lines: dict[str, dict], warehouse: "Warehouse | None",
                    warehouse_file: Path, conflicts: Conflicts) -> dict[str, Tenant]:
    """Every tenant has its own customer dataset, which is not the internal warehouse's either:
    a shared dataset would show one customer another's tables (and the warehouse's tables have
    the customers' table names). The error is reported on the second tenant of a pair, and
    involves both; the tenants left are returned (for the next check)."""
    seen: dict[tuple[str, str], str] = {}
    wh = _dataset_key(warehouse.project, warehouse.dataset) if warehouse else None
    kept = {}
    for t in tenants.values():
        d = t.destination
        key = _dataset_key(d.project, d.dataset)
        at = f"{t.file}:{_line_of(lines[t.tenant], ('destination', 'dataset'))}"
        if key == wh:
            conflicts.append((ConfigError(
                f"{at}: destination.dataset: {d.project}.{d.dataset} is the internal warehouse's "
                f"dataset ({warehouse_file})", tenant=None,
                hint="give the tenant a dataset of its own; the warehouse holds every tenant's "
                     "rows"), {t.tenant}))
            continue
        if key in seen:
            other = tenants[seen[key]]
            same = "" if (other.destination.dataset == d.dataset) else \
                f" ({other.destination.dataset!r}: BigQuery may take names differing only in " \
                "case for one)"
            conflicts.append((ConfigError(
                f"{at}: destination.dataset: {d.project}.{d.dataset} is already the dataset of "
                f"tenant {seen[key]!r} in {other.file}{same}",
                hint="every tenant needs its own customer dataset"), {seen[key], t.tenant}))
            continue
        seen[key] = t.tenant
        kept[t.tenant] = t
    return kept


def _check_table_names(tenants: dict[str, Tenant], lines: dict[str, dict],
                       warehouse: "Warehouse | None", conflicts: Conflicts) -> None:
    """Different MySQL table names of different tenants must not share a BigQuery name: the
    Dagster asset `customer/<name>` (and, with the warehouse, its one table of every tenant's
    rows) would mix two tables. Compared exactly (asset keys), and without case when the
    warehouse is enabled (a dataset can be case-insensitive: the emulator's is). Within one
    tenant file the same is checked already (load_tenant_file)."""
    fold = warehouse is not None and warehouse.enabled
    seen: dict[str, tuple[str, Tenant]] = {}          # BigQuery name → (first original, tenant)
    for t in tenants.values():
        for i, table in enumerate(t.tables):
            bq = table_name(table.name)
            key = bq.lower() if fold else bq
            first = seen.setdefault(key, (table.name, t))
            if first[0] == table.name:
                continue
            other = first[1]
            conflicts.append((ConfigError(
                f"{t.file}:{_line_of(lines[t.tenant], ('tables', i, 'name'))}: tables.{i}.name: "
                f"table {table.name!r} and table {first[0]!r} of tenant {other.tenant!r} "
                f"({other.file}) would be one BigQuery table {bq!r}"
                + (" (the warehouse compares table names without case)" if fold else ""),
                hint="name the table as the other tenant does, if it is the same table; else "
                     "deliver only one of them"), {t.tenant, other.tenant}))


def _shared_value_key(value: Any) -> tuple[str, Any]:
    """A tenant value as the most lenient MySQL string column would compare it: case folded,
    trailing spaces dropped (PAD SPACE). `hakobu validate` asks the server about the column's
    real collation (accents, ß = ss, ...); this offline check needs no server."""
    if isinstance(value, str):
        return "str", value.rstrip(" ").casefold()
    return "int", value


def _check_shared_sources(tenants: dict[str, Tenant], lines: dict[str, dict],
                          clusters: dict[str, Cluster], conflicts: Conflicts) -> None:
    """No two tenants may read the same rows. Tenants reading one schema of one server (by
    host and port: two cluster names may point at one server; schema names compared without
    case) are refused unless all of them are told apart by the same tenant column, with values
    of one type (MySQL compares `'1x' = 1` as true) that differ even under a case-insensitive,
    PAD SPACE collation ('acme', 'ACME' and 'acme ' are one value there). Every tenant of
    the schema is involved, except where two values are equal (those two)."""
    groups: dict[tuple, list[Tenant]] = {}
    for t in tenants.values():
        c = clusters.get(t.cluster)
        server = (c.host.lower(), c.port) if c else (t.cluster,)
        groups.setdefault((server, t.source.schema_.lower()), []).append(t)

    def at(t: Tenant, *loc) -> str:
        return f"{t.file}:{_line_of(lines[t.tenant], loc)}"

    for (_, schema), members in groups.items():
        if len(members) < 2:
            continue
        first = members[0]
        names = ", ".join(repr(m.tenant) for m in members)
        everyone = {m.tenant for m in members}
        whole = [m for m in members if not m.source.shared]
        for m in whole:
            others = ", ".join(repr(o.tenant) for o in members if o is not m)
            conflicts.append((ConfigError(
                f"{at(m, 'source', 'schema')}: source.schema: tenant {m.tenant!r} reads the whole "
                f"schema {m.source.schema_!r}, which tenant(s) {others} read too",
                hint="a schema shared by several tenants needs tenant_column and tenant_value "
                     "in every one of their files"), everyone))
        if whole:
            continue
        columns = {m.source.tenant_column.lower() for m in members}
        if len(columns) > 1:
            conflicts.append((ConfigError(
                f"{at(first, 'source', 'tenant_column')}: source.tenant_column: tenants {names} "
                f"share schema {first.source.schema_!r} but tell their rows apart by different "
                f"columns ({', '.join(sorted(columns))}): a row could belong to several",
                hint="use the same tenant_column in every tenant of the schema"), everyone))
            continue
        ints = [m for m in members if isinstance(m.source.tenant_value, int)]
        strs = [m for m in members if isinstance(m.source.tenant_value, str)]
        if ints and strs:
            # the odd ones out are reported (strings on a tie): most likely the wrong ones
            odd, rest = (ints, strs) if len(ints) < len(strs) else (strs, ints)
            kind, other = ("an integer", "strings") if odd is ints else ("a string", "integers")
            for m in odd:
                conflicts.append((ConfigError(
                    f"{at(m, 'source', 'tenant_value')}: source.tenant_value: "
                    f"{m.source.tenant_value!r} is {kind} where tenant(s) "
                    f"{', '.join(repr(o.tenant) for o in rest)} of schema "
                    f"{first.source.schema_!r} use {other}; MySQL compares '1x' = 1 and "
                    "'01' = 1 as true, so the tenants' rows could mix",
                    hint="write every tenant's value in the tenant column's type: integers "
                         "unquoted for an integer column, all quoted for a string column"),
                    everyone))
            continue
        seen: dict[tuple, Tenant] = {}
        for m in members:
            key = _shared_value_key(m.source.tenant_value)
            if key in seen:
                o = seen[key]
                how = "the same value" if o.source.tenant_value == m.source.tenant_value else \
                    "values equal under a case-insensitive or PAD SPACE collation"
                conflicts.append((ConfigError(
                    f"{at(m, 'source', 'tenant_value')}: source: tenants {o.tenant!r} "
                    f"({o.file}) and {m.tenant!r} read the same rows: tenant_value "
                    f"{o.source.tenant_value!r} and {m.source.tenant_value!r} are {how}",
                    hint="give each tenant its own schema, or its own tenant_value"),
                    {o.tenant, m.tenant}))
                continue
            seen[key] = m
