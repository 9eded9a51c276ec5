"""The diff between permissions.csv and a dataset's live access entries. Pure: no IO.

Live entries fall in three groups:

* managed member grants: `userByEmail`, `groupByEmail`, `domain` (and `iamMember` written as
  `user:`/`group:`/`serviceAccount:`/`domain:`) with role READER/WRITER/OWNER and no IAM condition;
* unmanaged entries, never touched: authorized views, datasets and routines, special groups
  (projectOwners, ...), other `iamMember`s (allUsers, principal sets), conditional grants and
  grants with any other role;
* among the managed ones, those that match a CSV row, those hakobu applied earlier and that have
  since left the CSV (**to remove**), and those nobody declared (**drift**: added in the console).

Telling "left the CSV" from "added in the console" needs a memory of what hakobu applied. It is
kept on the dataset itself, in labels `hakobu-grants-NN` holding a short hash per applied grant,
written in the same etag-guarded update as the access entries, so it cannot disagree with them.
Losing it is safe: grants that left the CSV are then reported as drift instead of removed.
"""

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from google.cloud.bigquery import AccessEntry

from hakobu.errors import GrantError
from hakobu.grants.csvfile import _ROLE_ALIASES, Grant, normalise_member

DriftPolicy = Literal["report", "revert", "adopt"]
DRIFT_POLICIES: tuple[DriftPolicy, ...] = ("report", "revert", "adopt")

STATE_LABEL_PREFIX = "hakobu-grants-"
_HASH_CHARS = 10            # 50 bits per grant: collisions within one dataset are negligible
_HASHES_PER_LABEL = 6       # 60 of the 63 characters a label value may hold
_MAX_STATE_LABELS = 60      # BigQuery allows 64 labels per dataset; leave room for others

_ENTITY_OF_KIND = {"user": "userByEmail", "serviceAccount": "userByEmail",
                   "group": "groupByEmail", "domain": "domain"}
_SA_SUFFIX = ".gserviceaccount.com"


# ---------------------------------------------------------------------------------------------
# access entries <-> grants


def entry_for(grant: Grant) -> AccessEntry:
    """The access entry BigQuery stores for a grant (service accounts are `userByEmail`)."""
    kind, value = grant.member.split(":", 1)
    return AccessEntry(grant.role, _ENTITY_OF_KIND[kind], value)


def grant_of(dataset: str, entry: AccessEntry) -> Grant | None:
    """The managed grant an entry expresses, or None when hakobu does not manage that entry."""
    props = entry.to_api_repr()
    if props.get("condition"):
        return None
    role = _ROLE_ALIASES.get(str(props.get("role") or "").lower())
    entities = [k for k in props if k not in ("role", "condition")]
    if role is None or len(entities) != 1 or not isinstance(props[entities[0]], str):
        return None
    entity, value = entities[0], props[entities[0]]
    if entity == "userByEmail":
        member = ("serviceAccount:" if value.lower().endswith(_SA_SUFFIX) else "user:") + value
    elif entity == "groupByEmail":
        member = "group:" + value
    elif entity == "domain":
        member = "domain:" + value
    elif entity == "iamMember" and value.split(":", 1)[0] in _ENTITY_OF_KIND:
        member = value
    else:
        return None
    try:
        return Grant(dataset, role, normalise_member(member))
    except ValueError:
        return None


def describe_entry(entry: AccessEntry) -> str:
    """A one-line human description of any access entry."""
    props = entry.to_api_repr()
    role = props.get("role")
    condition = props.get("condition")
    for kind in ("view", "routine"):
        if isinstance(props.get(kind), dict):
            ref = props[kind]
            name = ".".join(str(ref.get(k, "?")) for k in ("projectId", "datasetId",
                                                           "tableId" if kind == "view"
                                                           else "routineId"))
            return f"authorized {kind} {name}"
    if isinstance(props.get("dataset"), dict):
        ref = props["dataset"].get("dataset", {})
        return f"authorized dataset {ref.get('projectId', '?')}.{ref.get('datasetId', '?')}"
    entities = [k for k in props if k not in ("role", "condition")]
    who = ", ".join(f"{k}:{props[k]}" if isinstance(props[k], str)
                    else f"{k}:{json.dumps(props[k], sort_keys=True)}" for k in entities)
    text = f"{role or '(no role)'} {who or '(no member)'}"
    if condition:
        title = condition.get("title") or condition.get("expression", "")
        text += f" (IAM condition {title!r})"
    return text


# ---------------------------------------------------------------------------------------------
# what hakobu applied before, kept in dataset labels


def grant_hash(grant: Grant) -> str:
    digest = hashlib.sha256(f"{grant.role}\n{grant.member}".encode()).digest()
    return base64.b32encode(digest).decode().lower()[:_HASH_CHARS]


def read_state(labels: Mapping[str, str] | None) -> frozenset[str]:
    """The hashes of the grants hakobu applied, from the `hakobu-grants-NN` labels."""
    text = "".join(v or "" for k, v in sorted((labels or {}).items())
                   if k.startswith(STATE_LABEL_PREFIX))
    return frozenset(text[i:i + _HASH_CHARS] for i in range(0, len(text), _HASH_CHARS)
                     if len(text[i:i + _HASH_CHARS]) == _HASH_CHARS)


def state_labels(dataset: str, managed: Iterable[Grant],
                 labels: Mapping[str, str] | None) -> dict[str, str]:
    """The dataset's labels with the state rewritten to `managed`; other labels untouched.

    Labels no longer needed are set to "" rather than deleted: the emulator rejects a null label
    value, and "" reads back as no state on both.
    """
    hashes = sorted({grant_hash(g) for g in managed})
    chunks = ["".join(hashes[i:i + _HASHES_PER_LABEL])
              for i in range(0, len(hashes), _HASHES_PER_LABEL)]
    if len(chunks) > _MAX_STATE_LABELS:
        raise GrantError(f"{dataset}: {len(hashes)} grants exceed what hakobu can track on one "
                         "dataset", hint="grant to a group instead of many single users")
    out = {k: v for k, v in (labels or {}).items() if v is not None}
    wanted = {f"{STATE_LABEL_PREFIX}{i:02d}": c for i, c in enumerate(chunks)}
    for key in [k for k in out if k.startswith(STATE_LABEL_PREFIX)]:
        out[key] = ""
    out.update(wanted)
    return out


def _same_state(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    def state(labels):
        return {k: v for k, v in labels.items() if k.startswith(STATE_LABEL_PREFIX) and v}
    return state(a) == state(b)


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class DatasetPlan:
    """What applying permissions.csv to one dataset does, under one drift policy.

    `entries`/`labels` are the complete access list and labels to write; apply writes them only
    when `needs_write`.
    """

    dataset: str
    exists: bool
    policy: DriftPolicy = "report"
    add: tuple[Grant, ...] = ()
    remove: tuple[Grant, ...] = ()
    drift: tuple[Grant, ...] = ()
    reverted: tuple[Grant, ...] = ()
    adopted: tuple[Grant, ...] = ()
    unmanaged: tuple[str, ...] = ()
    restored: frozenset[Grant] = frozenset()
    entries: tuple[AccessEntry, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    state_changed: bool = False

    @property
    def changes_pending(self) -> bool:
        """Access changes (not counting the state labels)."""
        return bool(self.add or self.remove or self.reverted)

    @property
    def needs_write(self) -> bool:
        return self.exists and (self.changes_pending or self.state_changed)


def plan_dataset(dataset: str, desired: Iterable[Grant], live: Sequence[AccessEntry] | None,
                 labels: Mapping[str, str] | None = None, policy: DriftPolicy = "report",
                 revoke: Iterable[str] = (), protect: Iterable[str] = ()) -> DatasetPlan:
    """Diff the grants wanted on `dataset` against its live entries (None: it does not exist).

    `revoke` names members whose drift grants go even under the report policy (an explicit
    `hakobu revoke` of a console-added grant). `protect` names members whose grants are never
    removed: the identity hakobu runs as, which real BigQuery makes OWNER of a dataset it
    creates; revoking it would lock hakobu out.
    """
    if policy not in DRIFT_POLICIES:
        raise ValueError(f"unknown drift policy {policy!r}")
    wanted = {g for g in desired if g.dataset == dataset}
    if live is None:
        return DatasetPlan(dataset, False, policy, add=tuple(sorted(wanted)))
    applied = read_state(labels)
    revoke, protect = set(revoke), set(protect)
    found: dict[Grant, list[AccessEntry]] = {}
    unmanaged = []
    for entry in live:
        grant = grant_of(dataset, entry)
        if grant is None:
            unmanaged.append(describe_entry(entry))
        elif grant.member in protect and grant not in wanted:
            unmanaged.append(f"{grant.role} {grant.member} (the identity hakobu runs as; "
                             "never revoked)")
        else:
            found.setdefault(grant, []).append(entry)
    add = sorted(wanted - found.keys())
    stale = sorted(g for g in found if g not in wanted)
    remove = [g for g in stale if grant_hash(g) in applied]
    drift = [g for g in stale if grant_hash(g) not in applied]
    reverted = [g for g in drift if policy == "revert" or g.member in revoke]
    adopted = [g for g in drift if policy == "adopt" and g not in reverted]
    gone = set(remove) | set(reverted)
    entries = [e for e in live if grant_of(dataset, e) not in gone]
    entries += [entry_for(g) for g in add]
    new_labels = state_labels(dataset, wanted | set(adopted), labels)
    return DatasetPlan(
        dataset, True, policy, add=tuple(add), remove=tuple(remove), drift=tuple(drift),
        reverted=tuple(reverted), adopted=tuple(adopted), unmanaged=tuple(unmanaged),
        restored=frozenset(g for g in add if grant_hash(g) in applied),
        entries=tuple(entries), labels=new_labels,
        state_changed=not _same_state(new_labels, labels or {}))


# ---------------------------------------------------------------------------------------------
# rendering


def render_plan(plan: DatasetPlan) -> list[str]:
    if not plan.exists:
        waiting = f"; {len(plan.add)} grant(s) wait for it" if plan.add else ""
        return [f"  {plan.dataset}: dataset not found, skipped{waiting} (grants are applied "
                "when the pipeline creates it)"]
    lines = []
    for g in plan.add:
        note = "   (was removed outside hakobu)" if g in plan.restored else ""
        lines.append(f"    + {g.role:<6} {g.member}{note}")
    for g in plan.remove:
        lines.append(f"    - {g.role:<6} {g.member}")
    for g in plan.drift:
        if g in plan.reverted:
            note = "drift: granted outside permissions.csv, will be revoked"
            lines.append(f"    - {g.role:<6} {g.member}   ({note})")
        elif g in plan.adopted:
            note = "drift: granted outside permissions.csv, will be written to it"
            lines.append(f"    ~ {g.role:<6} {g.member}   ({note})")
        else:
            note = ("drift: granted outside permissions.csv; kept. --drift revert revokes it, "
                    "--drift adopt writes it to the CSV")
            lines.append(f"    ! {g.role:<6} {g.member}   ({note})")
    for text in plan.unmanaged:
        lines.append(f"    = {text}   (not managed by hakobu, kept)")
    if not plan.changes_pending and not plan.drift:
        head = f"  {plan.dataset}: no changes"
        return [head + (f", {len(plan.unmanaged)} unmanaged entries kept" if lines else "")]
    marker = "~" if plan.changes_pending or plan.adopted else " "
    return [f"{marker} {plan.dataset}", *lines]


def summarise(plans: Sequence[DatasetPlan]) -> str:
    add = sum(len(p.add) for p in plans if p.exists)
    remove = sum(len(p.remove) + len(p.reverted) for p in plans)
    drift = sum(len(p.drift) for p in plans)
    adopted = sum(len(p.adopted) for p in plans)
    missing = sum(1 for p in plans if not p.exists)
    parts = [f"{add} to add", f"{remove} to remove"]
    if drift:
        parts.append(f"{drift} drift" + (f" ({adopted} to adopt into the CSV)" if adopted else ""))
    if missing:
        parts.append(f"{missing} dataset(s) not found")
    if not add and not remove and not adopted:
        return "No changes. " + ", ".join(parts[2:]) if parts[2:] else "No changes."
    return "Plan: " + ", ".join(parts) + "."


def render_plans(plans: Sequence[DatasetPlan]) -> str:
    lines = []
    for plan in plans:
        lines.extend(render_plan(plan))
    lines.append("")
    lines.append(summarise(plans))
    return "\n".join(lines)
