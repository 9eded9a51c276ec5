"""Planning a table: the tenant file's declaration checked against the reflected table.

`plan_table` is pure — a function of what the source reflected (hakobu.ports.Reflected) and the
configuration; it reads nothing. `plan_for` is the one place that asks a source: it reflects,
plans, and adds what only a query can tell (the years a DATE/DATETIME cursor spans, for the
zeros pass). Every problem is a SchemaError naming tenant, table and the tenant-file key.
"""

import dataclasses

from hakobu.config import Cluster, Table, Tenant
from hakobu.errors import CursorTypeError, HakobuError, SchemaError, TypeContractError
from hakobu.naming import collisions
from hakobu.plan import (CIVIL_DATES, INT_TYPES, TablePlan, cursor_type_problem,
                         tenant_value_problem)
from hakobu.ports import Reflected, Source
from hakobu.types import column_spec

# the tenant-file key a plan_table error is about (hakobu validate prints its line)
_ROLE_KEYS = {"cursor": ("cursor",), "primary key": ("primary_key",), "excluded": ("exclude",),
              "tenant": ("source", "tenant_column")}


def at_key(exc: HakobuError, *key: str) -> HakobuError:
    """Mark an error with the tenant-file key it is about: `("cursor",)` for a key of the
    table's entry, `("source", "tenant_value")` for one of the tenant's source."""
    exc.config_key = key
    return exc


def plan_table(refl: Reflected | None, tenant: Tenant, table: Table, cluster: Cluster, *,
               datetime_as: str = "datetime") -> TablePlan:
    """Check the reflected table against the tenant file and plan its delivery: a pure function
    of the reflection and the configuration. Every problem is a SchemaError naming tenant and
    table and what to do. (A DATE/DATETIME cursor's years, which need a query, are added by
    plan_for.)"""
    schema, t, name = tenant.source.schema_, tenant.tenant, table.name
    if refl is None:
        raise SchemaError(f"table {schema}.{name} does not exist on cluster "
                          f"{cluster.name!r}", tenant=t, table=name,
                          hint=f"fix or remove the table in {tenant.file}")
    need = _Columns(refl, tenant, table)
    excluded = {need(c, "excluded").lower() for c in table.exclude}
    cursor = need(table.cursor, "cursor") if table.cursor else None
    tcol = need(tenant.source.tenant_column, "tenant") if tenant.source.shared else None
    ttype = need.by_name[tcol.lower()].data_type if tcol else None
    if tcol:
        _check_tenant_value(tenant, schema, name, tcol, ttype)
    pk = [need(c, "primary key") for c in table.primary_key] if table.primary_key \
        else list(refl.primary_key)
    if table.primary_key:
        _check_key_not_null(need, pk, tenant, schema, name)
    key_index, key_enforced = _key_index(refl, pk)
    full_replace = not pk
    if full_replace and table.delivery == "realtime":
        raise at_key(SchemaError(
            f"{schema}.{name} has no primary key, and delivery: realtime merges every change "
            "on one", tenant=t, table=name,
            hint=f"add a primary key in MySQL, declare NOT NULL columns that identify a row "
                 f"as primary_key: [...] in {tenant.file or 'the tenant file'}, or deliver "
                 "it nightly"), "delivery")
    if full_replace and table.without_primary_key != "replace":
        raise SchemaError(
            f"{schema}.{name} has no primary key, so rows cannot be merged idempotently",
            tenant=t, table=name,
            hint="add a primary key in MySQL, declare a unique column set with "
                 "primary_key: [...], or set without_primary_key: replace "
                 "(the table is then reloaded in full and swapped in atomically)")
    cursor_index = None
    if cursor and not full_replace:
        _check_cursor_type(need.by_name[cursor.lower()], cursor, tenant, schema, name)
        cursor_index = _require_index(refl, [tcol] if tcol else [], cursor, tenant, table, pk)
    specs = _specs(refl, excluded, tenant, name, cluster, datetime_as)
    refuse_name_collisions(specs, schema, name, t, tenant.file)
    return TablePlan(tenant=t, schema=schema, table=name, specs=tuple(specs),
                     primary_key=tuple(pk), cursor=None if full_replace else cursor,
                     chunk_rows=table.chunk_rows, query_rows=table.query_rows,
                     row_bytes=refl.row_bytes, tenant_column=tcol,
                     tenant_value=tenant.source.tenant_value, tenant_type=ttype,
                     zero_dates=table.zero_dates or cluster.zero_dates,
                     full_replace=full_replace, cursor_index=cursor_index,
                     key_index=None if full_replace else key_index,
                     key_enforced=full_replace or key_enforced,
                     verify_every=table.verify_every or cluster.verify_every,
                     full_read=full_read_reason(refl, table, cluster, tcol, pk)
                     if cursor and not full_replace else None)


def _counted(source: Source, plan: TablePlan, table: Table) -> TablePlan:
    """The estimate, checked by counting: a shared table's is an average over its tenants (a
    tenant far larger than the others would be read whole every night), and a server whose
    statistics are not recalculated (innodb_stats_auto_recalc=OFF) can report a grown table
    at its old size. The tenant's rows are counted up to the limit's worth (a bounded read of
    the cursor index); past it, the table stays incremental."""
    kib = _limit_kib(table, source.cluster)
    cap = kib * 1024 // max(plan.row_bytes or 100, 1) + 1
    if source.rows_up_to(plan, cap) < cap:
        return plan
    return dataclasses.replace(plan, full_read=None)


def _limit_kib(table: Table, cluster: Cluster) -> int:
    """full_read_below_kib: the table's, else the cluster's."""
    return table.full_read_below_kib if table.full_read_below_kib is not None \
        else cluster.full_read_below_kib


def full_read_reason(refl: Reflected, table: Table, cluster: Cluster,
                     tenant_column: str | None, key: list[str] | tuple = ()) -> str | None:
    """Why a nightly table with a cursor is read whole every night, or None (incremental).

    When the tenant's rows are smaller than full_read_below_kib (the table's, else the
    cluster's): the server's estimate of the clustered index (DATA_LENGTH), divided on a shared
    table by its tenant column's distinct values (the CARDINALITY of an index starting with it).
    One scan of such a table reads fewer pages than the incremental night's fixed queries — the
    bound, the NULL and zero-date passes (one index descent per month of the cursor's years),
    the key checksums and the content slice — and it needs no key check: the MERGE deletes the
    rows the read did not find. Which mode a table is in changes only what is read, never what
    is delivered: both end with the tenant's rows equal to the source's. A shared table whose
    key does not start with the tenant column is never read whole: the whole read goes in key
    order, and would pass every tenant's rows to find this one's."""
    kib = _limit_kib(table, cluster)
    if not kib or table.delivery != "nightly" or refl.data_bytes is None:
        return None
    if tenant_column and (not key or key[0].lower() != tenant_column.lower()):
        return None
    tenants = max(1, refl.distinct.get(tenant_column.lower(), 1)) if tenant_column else 1
    est = refl.data_bytes / tenants
    if est >= kib * 1024:
        return None
    share = f" / {tenants} tenants" if tenant_column else ""
    return (f"read whole: ~{est / 1024:,.0f} KiB (DATA_LENGTH {refl.data_bytes / 1024:,.0f} KiB"
            f"{share}) < full_read_below_kib {kib}")


class _Columns:
    """A column the tenant file names, by its reflected name (MySQL compares names without
    case); a missing one is a SchemaError at the tenant-file key of its role."""

    def __init__(self, refl: Reflected, tenant: Tenant, table: Table):
        self.refl, self.tenant, self.table = refl, tenant, table
        self.by_name = {c.name.lower(): c for c in refl.columns}

    def __call__(self, col: str, role: str) -> str:
        if col.lower() not in self.by_name:
            schema, name = self.tenant.source.schema_, self.table.name
            raise at_key(SchemaError(
                f"{role} column {col!r} does not exist in {schema}.{name}",
                tenant=self.tenant.tenant, table=name,
                hint=f"columns are: {', '.join(c.name for c in self.refl.columns)}; "
                     f"fix {self.tenant.file}"), *_ROLE_KEYS[role])
        return self.by_name[col.lower()].name


def _check_tenant_value(tenant: Tenant, schema: str, name: str, tcol: str, ttype: str) -> None:
    problem = tenant_value_problem(ttype, tenant.source.tenant_value)
    if not problem:
        return
    value = tenant.source.tenant_value
    fix = (f'tenant_value: "{value}" (quoted)' if isinstance(value, int)
           else "an unquoted integer" if ttype in INT_TYPES
           else "a value of the column's type")
    raise at_key(SchemaError(
        f"source.tenant_value for tenant column {tcol!r} of {schema}.{name} "
        f"{problem}; the tenant could receive another tenant's rows",
        tenant=tenant.tenant, table=name, hint=f"write {fix} in {tenant.file}"),
        "source", "tenant_value")


def _check_key_not_null(need: _Columns, pk: list[str], tenant: Tenant, schema: str,
                        name: str) -> None:
    nullable = [c for c in pk if need.by_name[c.lower()].nullable]
    if nullable:
        raise at_key(SchemaError(
            f"declared primary key column(s) {nullable} of {schema}.{name} can be NULL: "
            "a NULL key never matches in the MERGE (NULL = NULL is not true), so such "
            "a row would be inserted again on every run, and rows whose keys differ "
            "only by NULL could not be told apart", tenant=tenant.tenant, table=name,
            hint=f"make them NOT NULL in MySQL (ALTER TABLE {schema}.{name} MODIFY "
                 f"{nullable[0]} ... NOT NULL) or declare NOT NULL columns that "
                 f"identify a row as primary_key: in {tenant.file}"), "primary_key")


def _check_cursor_type(info, cursor: str, tenant: Tenant, schema: str, name: str) -> None:
    problem = cursor_type_problem(info)
    if problem:
        raise CursorTypeError(
            f"cursor column {cursor!r} of {schema}.{name}: {problem}",
            tenant=tenant.tenant, table=name,
            hint=f"in {tenant.file or 'the tenant file'}, table {name!r}: declare as "
                 "cursor a DATETIME/TIMESTAMP column stamped on every change, or an "
                 "integer/DECIMAL column from a monotone allocator (AUTO_INCREMENT, a "
                 "version counter); or remove `cursor:` to read the table in full "
                 "every run")


def _specs(refl: Reflected, excluded: set[str], tenant: Tenant, name: str, cluster: Cluster,
           datetime_as: str) -> list:
    specs = []
    for col in refl.columns:
        if col.name.lower() in excluded:
            continue
        try:
            specs.append(column_spec(col, datetime_as=datetime_as,
                                     source_timezone=cluster.timezone))
        except TypeContractError as exc:
            exc.tenant, exc.table = tenant.tenant, name
            raise SchemaError(str(exc)) from exc
    return specs


def _key_index(refl: Reflected, pk: list[str]) -> tuple[str | None, bool]:
    """(the index ordered by the key, whether the source enforces the key unique).

    The index: PRIMARY when the key is the table's primary key; else a UNIQUE index on
    exactly the key's columns in order, else any index starting with them (ordered by the
    key all the same); else None. Enforced: PRIMARY is the key, or some UNIQUE index's
    columns are all key columns (then no two rows can share the key)."""
    want = [c.lower() for c in pk]
    if not want:
        return None, False
    lower = {n: [c.lower() for c in cols] for n, cols in refl.indexes.items()}
    enforced = any(set(cols) <= set(want) for n, cols in lower.items() if n in refl.unique)
    if lower.get("PRIMARY") == want:
        return "PRIMARY", True
    exact = sorted(n for n, cols in lower.items() if cols == want and n in refl.unique)
    if exact:
        return exact[0], enforced
    leading = sorted(lower, key=lambda n: (n not in refl.unique, n != "PRIMARY", n))
    for n in leading:
        if lower[n][:len(want)] == want:
            return n, enforced
    return None, enforced

def _require_index(refl: Reflected, prefix: list[str], cursor: str, tenant: Tenant,
                   table: Table, pk: list[str] | None = None) -> str:
    """Keyset chunks on (cursor, pk) are only cheap with an index starting with
    (tenant column,) cursor; without it every chunk is a full scan and sort. One that goes
    on with the key's columns is preferred: a table without a PRIMARY KEY has only a hidden
    row id behind the cursor in its secondary indexes, so ORDER BY cursor, key would sort."""
    want = [c.lower() for c in prefix + [cursor]]
    full = want + [c.lower() for c in pk or []]
    found = [name for name, cols in sorted(refl.indexes.items())
             if [c.lower() for c in cols[:len(want)]] == want]
    for name in found:
        if [c.lower() for c in refl.indexes[name][:len(full)]] == full:
            return name
    if found:
        return found[0]
    cols = ", ".join(prefix + [cursor])
    raise SchemaError(f"no index starts with ({cols}); every chunk would scan the table",
                      tenant=tenant.tenant, table=table.name,
                      hint=f"CREATE INDEX ... ON {tenant.source.schema_}.{table.name} ({cols})")


def refuse_name_collisions(specs, schema: str, table: str, tenant: str, file: str) -> None:
    """Columns whose BigQuery names (hakobu.naming) are one name to BigQuery, which compares
    column names without case: the table is refused, naming them, before anything is read —
    two columns are never merged into one. (MySQL itself refuses two columns differing only
    in case; a mapped name can still meet another column's.)"""
    by_name = {s.name: s.bq_name for s in specs}
    clashes = collisions([s.name for s in specs], lambda n: by_name[n])
    if clashes:
        what = "; ".join(f"{', '.join(repr(o) for o in originals)} → {bq!r}"
                         for bq, originals in clashes)
        raise at_key(SchemaError(
            f"columns of {schema}.{table} would land in one BigQuery column (names compared "
            f"without case): {what}", tenant=tenant, table=table,
            hint=f"exclude all but one of them in {file or 'the tenant file'} (exclude: [...]), "
                 "or rename one in MySQL"), "exclude")


def plan_for(source: Source, tenant: Tenant, table: Table, *,
             datetime_as: str = "datetime") -> TablePlan:
    """Reflect the table on the source and plan it (plus a civil-date cursor's years)."""
    refl = source.reflect(tenant.source.schema_, table.name)
    plan = plan_table(refl, tenant, table, source.cluster, datetime_as=datetime_as)
    if plan.full_read:
        plan = _counted(source, plan, table)
    if plan.full_read:
        return plan                  # no zeros pass: the years are not needed
    if plan.cursor and plan.spec(plan.cursor).info.data_type in CIVIL_DATES:
        plan = dataclasses.replace(plan, cursor_years=source.cursor_years(plan))
    return plan
