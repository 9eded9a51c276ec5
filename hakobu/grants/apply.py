"""Make BigQuery match permissions.csv, one dataset at a time, with optimistic concurrency.

Each dataset is read, planned (hakobu.grants.plan) and written back with `update_dataset`, which
sends the etag it read as If-Match: a change made by someone else in between makes BigQuery answer
412, and the dataset is read and planned again, a bounded number of times, then reported as
GrantConflict. Nothing is ever written from a stale read.
"""

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from google.api_core import exceptions as gexc
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from hakobu.errors import ConfigError, GrantConflict, GrantError, HakobuError
from hakobu.grants.csvfile import (Grant, GrantRow, load_rows, normalise_member, read_rows,
                                   write_rows)
from hakobu.grants.plan import DatasetPlan, DriftPolicy, plan_dataset, render_plan

MAX_ATTEMPTS = 3

ClientFor = Callable[[str], bigquery.Client]


@dataclass(frozen=True)
class Change:
    """One line of the audit trail. action: add, remove, revert (drift revoked), adopt."""

    dataset: str
    action: Literal["add", "remove", "revert", "adopt"]
    role: str
    member: str

    def __str__(self) -> str:
        return f"{self.dataset}: {self.action} {self.role} {self.member}"


@dataclass
class DatasetResult:
    dataset: str
    status: Literal["applied", "unchanged", "missing", "failed"]
    plan: DatasetPlan | None = None
    changes: tuple[Change, ...] = ()
    attempts: int = 0
    error: HakobuError | None = None

    @property
    def drift(self) -> tuple[Grant, ...]:
        """Drift found and left in place (reported only)."""
        if self.plan is None:
            return ()
        acted = set(self.plan.reverted) | set(self.plan.adopted)
        return tuple(g for g in self.plan.drift if g not in acted)


@dataclass
class ApplyReport:
    results: list[DatasetResult] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return [c for r in self.results for c in r.changes]

    @property
    def drift(self) -> list[Grant]:
        return [g for r in self.results for g in r.drift]

    @property
    def failed(self) -> list[DatasetResult]:
        return [r for r in self.results if r.status == "failed"]

    def render(self) -> str:
        lines = []
        for r in self.results:
            if r.status == "failed":
                lines.append(f"! {r.dataset}: FAILED: {r.error}")
            elif r.status == "missing":
                lines.append(f"  {r.dataset}: dataset not found, skipped")
            elif r.changes:
                lines.append(f"~ {r.dataset}: applied")
                lines.extend(f"    {_SIGN[c.action]} {c.role:<6} {c.member}   ({c.action})"
                             for c in r.changes)
            else:
                lines.append(f"  {r.dataset}: no changes")
            lines.extend(f"    ! {g.role:<6} {g.member}   (drift: granted outside "
                         "permissions.csv, kept; --drift revert or --drift adopt)"
                         for g in r.drift)
        counts = {a: sum(1 for c in self.changes if c.action == a)
                  for a in ("add", "remove", "revert", "adopt")}
        summary = (f"Applied: {counts['add']} added, {counts['remove'] + counts['revert']} "
                   f"removed, {counts['adopt']} adopted into permissions.csv, "
                   f"{len(self.drift)} drift reported")
        if self.failed:
            summary += f", {len(self.failed)} dataset(s) FAILED"
        return "\n".join([*lines, "", summary + "."])


_SIGN = {"add": "+", "remove": "-", "revert": "-", "adopt": "~"}


def changes_of(plan: DatasetPlan) -> tuple[Change, ...]:
    out = [Change(plan.dataset, "add", g.role, g.member) for g in plan.add]
    out += [Change(plan.dataset, "remove", g.role, g.member) for g in plan.remove]
    out += [Change(plan.dataset, "revert", g.role, g.member) for g in plan.reverted]
    out += [Change(plan.dataset, "adopt", g.role, g.member) for g in plan.adopted]
    return tuple(out)


def client_factory(settings) -> ClientFor:
    """One client per project, from the settings the caller was handed (anything with
    `client(project)`, e.g. resources.bigquery_client.BigQuerySettings): the grants logic
    builds no client of its own and reads no environment."""
    cache: dict[str, bigquery.Client] = {}

    def client_for(project: str) -> bigquery.Client:
        if project not in cache:
            cache[project] = settings.client(project)
        return cache[project]

    return client_for


def _retry(settings):
    """The settings' retry (capped, transient errors only); the client's default without."""
    return settings.retry() if settings is not None else DEFAULT_RETRY


def _read(client: bigquery.Client, dataset_id: str, retry) -> bigquery.Dataset | None:
    try:
        return client.get_dataset(dataset_id, retry=retry)
    except gexc.NotFound:
        return None
    except (gexc.GoogleAPIError, OSError) as exc:  # OSError: requests' transport errors
        raise GrantError(f"{dataset_id}: cannot read the dataset: {exc}",
                         hint=_api_hint(exc)) from exc


def _api_hint(exc: Exception) -> str:
    if isinstance(exc, gexc.Forbidden):
        return "the credentials need bigquery.datasets.get and bigquery.datasets.update " \
               "(roles/bigquery.dataOwner on the dataset, or roles/bigquery.admin)"
    return "check connectivity and credentials, then run `hakobu grants apply` again"


def plan_one(client: bigquery.Client, dataset_id: str, desired: Iterable[Grant], *,
             policy: DriftPolicy = "report", revoke: Collection[str] = (), settings=None
             ) -> DatasetPlan:
    """Read one dataset and plan it (no write)."""
    live = _read(client, dataset_id, _retry(settings))
    return plan_dataset(dataset_id, desired, None if live is None else live.access_entries,
                        None if live is None else live.labels, policy, revoke,
                        own_identity(client))


def plan_grants(config, *, settings, client_for: ClientFor | None = None,
                policy: DriftPolicy = "report", rows: Sequence[GrantRow] | None = None
                ) -> tuple[list[DatasetPlan], list[HakobuError]]:
    """Plan every managed dataset. The CSV is validated first (ConfigErrors: nothing read)."""
    rows = load_rows(config) if rows is None else rows
    client_for = client_for or client_factory(settings)
    desired = [r.grant for r in rows]
    plans, errors = [], []
    for dataset_id, managed in sorted(config.managed_datasets().items()):
        try:
            plans.append(plan_one(client_for(managed.project), dataset_id, desired,
                                  policy=policy, settings=settings))
        except HakobuError as exc:
            errors.append(exc)
    return plans, errors


def apply_dataset_grants(client: bigquery.Client, config, dataset_id: str, *,
                         policy: DriftPolicy = "report", rows: Sequence[GrantRow] | None = None,
                         revoke: Collection[str] = (), settings=None,
                         max_attempts: int = MAX_ATTEMPTS) -> DatasetResult:
    """Make one dataset's grants match permissions.csv.

    Call it right after creating a customer dataset so it never lives without its grants.
    A missing dataset is reported (status "missing"), not created. Raises ConfigErrors for a bad
    CSV (nothing written), GrantConflict when the dataset kept changing under us, GrantError for
    other API failures.
    """
    if dataset_id not in config.managed_datasets():
        raise ConfigError(f"dataset {dataset_id!r} is not managed by hakobu",
                          hint="declare it in tenants/ (destination, warehouse.yaml or "
                               "datasets.yaml)")
    rows = load_rows(config) if rows is None else rows
    retry = _retry(settings)
    desired = {r.grant for r in rows if r.grant.dataset == dataset_id}
    protect = own_identity(client)
    last: Exception | None = None
    adopted: tuple[Change, ...] = ()  # written to the CSV by an earlier attempt
    for attempt in range(1, max_attempts + 1):
        live = _read(client, dataset_id, retry)
        if live is None:
            return DatasetResult(dataset_id, "missing", attempts=attempt, changes=adopted,
                                 plan=plan_dataset(dataset_id, desired, None))
        plan = plan_dataset(dataset_id, desired, live.access_entries, live.labels, policy, revoke,
                            protect)
        if not plan.needs_write:
            return DatasetResult(dataset_id, "applied" if adopted else "unchanged", plan,
                                 adopted, attempt)
        if plan.adopted:
            _adopt(config, plan.adopted)
            desired |= set(plan.adopted)
            adopted += tuple(Change(dataset_id, "adopt", g.role, g.member) for g in plan.adopted)
        live.access_entries = list(plan.entries)
        live.labels = plan.labels
        try:
            client.update_dataset(live, ["access_entries", "labels"], retry=retry)
        except gexc.PreconditionFailed as exc:
            last = exc
            continue
        except (gexc.GoogleAPIError, OSError) as exc:
            raise GrantError(f"{dataset_id}: cannot update the access entries: {exc}",
                             hint=_api_hint(exc)) from exc
        changes = tuple(c for c in changes_of(plan) if c.action != "adopt") + adopted
        return DatasetResult(dataset_id, "applied" if changes else "unchanged", plan, changes,
                             attempt)
    raise GrantConflict(
        f"{dataset_id}: the dataset changed between read and write {max_attempts} times; "
        "nothing was overwritten", hint="someone is editing its access right now; run "
                                        "`hakobu grants apply` again") from last


def own_identity(client: bigquery.Client) -> frozenset[str]:
    """The member hakobu acts as, when the credentials say (service accounts do; anonymous
    emulator credentials and some user credentials do not)."""
    email = getattr(getattr(client, "_credentials", None), "service_account_email", None)
    if not isinstance(email, str) or "@" not in email:
        return frozenset()
    kind = "serviceAccount" if email.lower().endswith(".gserviceaccount.com") else "user"
    try:
        return frozenset({normalise_member(f"{kind}:{email}")})
    except ValueError:
        return frozenset()


def _adopt(config, grants: Iterable[Grant]) -> None:
    """Write drift grants into permissions.csv (re-read, so concurrent edits are kept)."""
    path = config.permissions_file
    rows = read_rows(path, config.managed_datasets())
    write_rows(path, [*rows, *(GrantRow(g) for g in grants)])


def apply_grants(config, *, settings, client_for: ClientFor | None = None,
                 policy: DriftPolicy = "report", datasets: Collection[str] | None = None,
                 log: Callable[[str], None] | None = None) -> ApplyReport:
    """Apply permissions.csv to every managed dataset (or to `datasets`), one at a time.

    The whole CSV is validated before the first request (ConfigErrors: nothing applied). A failure
    on one dataset is recorded and the others still get their grants.
    """
    rows = load_rows(config)
    client_for = client_for or client_factory(settings)
    report = ApplyReport()
    for dataset_id, managed in sorted(config.managed_datasets().items()):
        if datasets is not None and dataset_id not in datasets:
            continue
        try:
            result = apply_dataset_grants(client_for(managed.project), config, dataset_id,
                                          policy=policy, rows=rows, settings=settings)
            if result.plan is not None and result.plan.adopted:
                rows = load_rows(config)
        except HakobuError as exc:
            result = DatasetResult(dataset_id, "failed", error=exc)
        report.results.append(result)
        if log is not None:
            for line in ApplyReport([result]).render().splitlines()[:-2]:
                log(line)
    return report


__all__ = ["ApplyReport", "Change", "DatasetResult", "apply_dataset_grants", "apply_grants",
           "changes_of", "client_factory", "plan_grants", "plan_one", "render_plan"]
