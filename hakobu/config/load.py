"""Loading a config directory: every file parsed and validated, every error collected with its
file and line and raised together (ConfigErrors)."""

from pathlib import Path

from pydantic import ValidationError

from hakobu.config.checks import (Conflicts, check_datasets, check_shared_sources,
                                  check_table_names)
from hakobu.config.models import (CLUSTERS_FILE, DATASETS_FILE, RESERVED_FILES, WAREHOUSE_FILE,
                                  Cluster, ExtraDataset, Tenant, Warehouse, _Model, config_dir)
from hakobu.config.whole import BrokenTenant, Config
from hakobu.config.yamlfile import interpolate, line_of, read_yaml, validation_errors
from hakobu.errors import ConfigError, ConfigErrors
from hakobu.naming import collisions, table_name


def load_clusters(path: Path, errors: list[ConfigError]) -> dict[str, Cluster]:
    if not path.exists():
        errors.append(ConfigError(f"{path}: missing",
                                  hint="create it with a 'clusters:' mapping (see README.md)"))
        return {}
    parsed = read_yaml(path, errors)
    if parsed is None:
        return {}
    data, lines = parsed
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), dict):
        errors.append(ConfigError(f"{path}:1: expected a top-level 'clusters:' mapping"))
        return {}
    extra = set(data) - {"clusters"}
    for key in sorted(extra):
        errors.append(ConfigError(f"{path}:{line_of(lines, (key,))}: {key}: unknown key"))
    clusters = {}
    for name, body in data["clusters"].items():
        loc = ("clusters", name)
        if not isinstance(body, dict):
            errors.append(ConfigError(f"{path}:{line_of(lines, loc)}: clusters.{name}: "
                                      "expected a mapping"))
            continue
        if "password" in body:
            errors.append(ConfigError(
                f"{path}:{line_of(lines, loc + ('password',))}: clusters.{name}.password: "
                "passwords never go in files", hint="use password_env: NAME_OF_ENV_VARIABLE"))
            continue
        before = len(errors)
        body = interpolate(body, f"{path}:{line_of(lines, loc)}", errors)
        if len(errors) > before:
            continue
        try:
            clusters[name] = Cluster(name=name, **body)
        except ValidationError as exc:
            errors.extend(validation_errors(path, exc, lines, loc))
    return clusters


def load_tenant_file(path: Path, clusters: dict[str, Cluster],
                     errors: list[ConfigError], lines_out: dict | None = None) -> Tenant | None:
    parsed = read_yaml(path, errors)
    if parsed is None:
        return None
    data, lines = parsed
    if lines_out is not None:
        lines_out.update(lines)
    if not isinstance(data, dict):
        errors.append(ConfigError(f"{path}:1: expected a mapping with tenant, cluster, source, "
                                  "destination, schedule, deliver_by and tables"))
        return None
    clashes = table_name_collisions(path, data, lines)
    try:
        tenant = Tenant(**data, file=str(path))
    except ValidationError as exc:
        errors.extend(validation_errors(path, exc, lines) + clashes)
        return None
    if clashes:
        errors.extend(clashes)
        return None
    if tenant.cluster not in clusters:
        errors.append(ConfigError(
            f"{path}:{line_of(lines, ('cluster',))}: cluster: unknown cluster {tenant.cluster!r}",
            hint=f"declare it in tenants/{CLUSTERS_FILE} (known: {', '.join(sorted(clusters))})"))
        return None
    if path.stem != tenant.tenant:
        errors.append(ConfigError(
            f"{path}:{line_of(lines, ('tenant',))}: tenant: id {tenant.tenant!r} differs from "
            f"the file name", hint=f"rename the file to {tenant.tenant}.yaml"))
        return None
    return tenant


def table_name_collisions(path: Path, data: dict, lines: dict) -> list[ConfigError]:
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
            f"{path}:{line_of(lines, ('tables', i, 'name'))}: tables.{i}.name: tables "
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
    clusters = load_clusters(tdir / CLUSTERS_FILE, cluster_errors)
    tenants, files, all_lines = _load_tenants(tdir, clusters)
    warehouse_errors: list[ConfigError] = []
    warehouse = load_single(tdir / WAREHOUSE_FILE, "warehouse", Warehouse, warehouse_errors)
    conflicts: Conflicts = []                   # (error, the tenants involved)
    own_datasets = check_datasets(tenants, all_lines, warehouse, tdir / WAREHOUSE_FILE,
                                  conflicts)
    check_shared_sources(own_datasets, all_lines, clusters, conflicts)
    check_table_names(own_datasets, all_lines, warehouse, conflicts)
    dataset_errors: list[ConfigError] = []
    extras = load_list(tdir / DATASETS_FILE, "datasets", ExtraDataset, dataset_errors)
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


def _load_tenants(tdir: Path, clusters: dict[str, Cluster]
                  ) -> tuple[dict[str, Tenant], dict[str, list[ConfigError]], dict[str, dict]]:
    """Every tenant file of `tdir`: (tenant id → tenant, file → its own errors, tenant id →
    {key path: line}). A tenant id defined by two files is an error of both."""
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
    return tenants, files, all_lines


def load_single(path: Path, key: str, model: type[_Model], errors: list[ConfigError]):
    """An optional file holding one `key:` mapping."""
    if not path.exists():
        return None
    parsed = read_yaml(path, errors)
    if parsed is None:
        return None
    data, lines = parsed
    if not isinstance(data, dict) or set(data) != {key} or not isinstance(data[key], dict):
        errors.append(ConfigError(f"{path}:1: expected exactly one top-level '{key}:' mapping"))
        return None
    try:
        return model(**data[key])
    except ValidationError as exc:
        errors.extend(validation_errors(path, exc, lines, (key,)))
        return None


def load_list(path: Path, key: str, model: type[_Model], errors: list[ConfigError]) -> list:
    """An optional file holding one `key:` list of mappings."""
    if not path.exists():
        return []
    parsed = read_yaml(path, errors)
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
            errors.extend(validation_errors(path, exc, lines, (key, i)))
    return out
