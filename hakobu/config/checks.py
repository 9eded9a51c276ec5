"""Checks across tenant files: own datasets, table names that would meet in one BigQuery
table, and tenants that would read the same source rows. Each conflict is an error with the
tenants it involves (load_config(isolate=True) leaves all of them out)."""

from pathlib import Path
from typing import Any

from hakobu.config.models import Cluster, Tenant, Warehouse
from hakobu.config.yamlfile import line_of
from hakobu.errors import ConfigError
from hakobu.naming import table_name


def dataset_key(project: str, dataset: str) -> tuple[str, str]:
    """Two dataset ids that BigQuery may take for one. Dataset names are case-sensitive by
    default but case-insensitive in datasets created so (`is_case_insensitive`), and projects
    are lower-case: names that differ only in case are treated as one dataset."""
    return project.lower(), dataset.lower()


Conflicts = list[tuple[ConfigError, set[str]]]    # an error and the tenants it involves


def check_datasets(tenants: dict[str, Tenant], lines: dict[str, dict], warehouse: "Warehouse | None",
                    warehouse_file: Path, conflicts: Conflicts) -> dict[str, Tenant]:
    """Every tenant has its own customer dataset, which is not the internal warehouse's either:
    a shared dataset would show one customer another's tables (and the warehouse's tables have
    the customers' table names). The error is reported on the second tenant of a pair, and
    involves both; the tenants left are returned (for the next check)."""
    seen: dict[tuple[str, str], str] = {}
    wh = dataset_key(warehouse.project, warehouse.dataset) if warehouse else None
    kept = {}
    for t in tenants.values():
        d = t.destination
        key = dataset_key(d.project, d.dataset)
        at = f"{t.file}:{line_of(lines[t.tenant], ('destination', 'dataset'))}"
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


def check_table_names(tenants: dict[str, Tenant], lines: dict[str, dict],
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
                f"{t.file}:{line_of(lines[t.tenant], ('tables', i, 'name'))}: tables.{i}.name: "
                f"table {table.name!r} and table {first[0]!r} of tenant {other.tenant!r} "
                f"({other.file}) would be one BigQuery table {bq!r}"
                + (" (the warehouse compares table names without case)" if fold else ""),
                hint="name the table as the other tenant does, if it is the same table; else "
                     "deliver only one of them"), {t.tenant, other.tenant}))


def shared_value_key(value: Any) -> tuple[str, Any]:
    """A tenant value as the most lenient MySQL string column would compare it: case folded,
    trailing spaces dropped (PAD SPACE). `hakobu validate` asks the server about the column's
    real collation (accents, ß = ss, ...); this offline check needs no server."""
    if isinstance(value, str):
        return "str", value.rstrip(" ").casefold()
    return "int", value


def check_shared_sources(tenants: dict[str, Tenant], lines: dict[str, dict],
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
        return f"{t.file}:{line_of(lines[t.tenant], loc)}"

    for members in groups.values():
        if len(members) < 2:
            continue
        before = len(conflicts)
        for check in (_whole_schema, _tenant_columns, _value_types):
            check(members, at, conflicts)
            if len(conflicts) > before:
                break
        else:
            _equal_values(members, at, conflicts)


def _whole_schema(members: list[Tenant], at, conflicts: Conflicts) -> None:
    """A tenant reading the whole schema that others read too."""
    everyone = {m.tenant for m in members}
    for m in members:
        if m.source.shared:
            continue
        others = ", ".join(repr(o.tenant) for o in members if o is not m)
        conflicts.append((ConfigError(
            f"{at(m, 'source', 'schema')}: source.schema: tenant {m.tenant!r} reads the whole "
            f"schema {m.source.schema_!r}, which tenant(s) {others} read too",
            hint="a schema shared by several tenants needs tenant_column and tenant_value "
                 "in every one of their files"), everyone))


def _tenant_columns(members: list[Tenant], at, conflicts: Conflicts) -> None:
    """Tenants of one schema telling their rows apart by different columns."""
    first = members[0]
    columns = {m.source.tenant_column.lower() for m in members}
    if len(columns) > 1:
        names = ", ".join(repr(m.tenant) for m in members)
        conflicts.append((ConfigError(
            f"{at(first, 'source', 'tenant_column')}: source.tenant_column: tenants {names} "
            f"share schema {first.source.schema_!r} but tell their rows apart by different "
            f"columns ({', '.join(sorted(columns))}): a row could belong to several",
            hint="use the same tenant_column in every tenant of the schema"),
            {m.tenant for m in members}))


def _value_types(members: list[Tenant], at, conflicts: Conflicts) -> None:
    """Integer and string tenant values mixed in one schema: the odd ones out are reported
    (strings on a tie), most likely the wrong ones."""
    ints = [m for m in members if isinstance(m.source.tenant_value, int)]
    strs = [m for m in members if isinstance(m.source.tenant_value, str)]
    if not (ints and strs):
        return
    odd, rest = (ints, strs) if len(ints) < len(strs) else (strs, ints)
    kind, other = ("an integer", "strings") if odd is ints else ("a string", "integers")
    for m in odd:
        conflicts.append((ConfigError(
            f"{at(m, 'source', 'tenant_value')}: source.tenant_value: "
            f"{m.source.tenant_value!r} is {kind} where tenant(s) "
            f"{', '.join(repr(o.tenant) for o in rest)} of schema "
            f"{members[0].source.schema_!r} use {other}; MySQL compares '1x' = 1 and "
            "'01' = 1 as true, so the tenants' rows could mix",
            hint="write every tenant's value in the tenant column's type: integers "
                 "unquoted for an integer column, all quoted for a string column"),
            {m.tenant for m in members}))


def _equal_values(members: list[Tenant], at, conflicts: Conflicts) -> None:
    """Two tenants whose values a lenient collation takes for one."""
    seen: dict[tuple, Tenant] = {}
    for m in members:
        key = shared_value_key(m.source.tenant_value)
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
