"""The pure plan: add / remove / drift / unmanaged, state labels, rendering, and properties."""

import json
import re

import pytest
from google.cloud.bigquery import AccessEntry
from hypothesis import given, settings
from hypothesis import strategies as st

from hakobu.grants.csvfile import Grant
from hakobu.grants.plan import (STATE_LABEL_PREFIX, entry_for, grant_of, plan_dataset,
                                read_state, render_plans, state_labels)

DS = "acme-prod.acme_dwh"
VIEW = AccessEntry(None, "view", {"projectId": "acme-prod", "datasetId": "shared",
                                  "tableId": "v_orders"})
AUTH_DATASET = AccessEntry(None, "dataset", {"dataset": {"projectId": "acme-prod",
                                                         "datasetId": "marts"},
                                             "targetTypes": ["VIEWS"]})
ROUTINE = AccessEntry(None, "routine", {"projectId": "acme-prod", "datasetId": "udfs",
                                        "routineId": "mask"})
OWNERS = AccessEntry("OWNER", "specialGroup", "projectOwners")
PUBLIC = AccessEntry("READER", "iamMember", "allUsers")
CONDITIONAL = AccessEntry("READER", "userByEmail", "temp@example.com",
                          condition={"title": "until 2030", "expression": "request.time < x"})
OTHER_ROLE = AccessEntry("roles/bigquery.metadataViewer", "groupByEmail", "meta@example.com")
UNMANAGED = [VIEW, AUTH_DATASET, ROUTINE, OWNERS, PUBLIC, CONDITIONAL, OTHER_ROLE]


def g(role, member, dataset=DS):
    return Grant(dataset, role, member)


def applied(*grants):
    """Labels saying hakobu applied these grants earlier."""
    return state_labels(DS, grants, {})


@pytest.mark.parametrize("entry,expected", [
    (AccessEntry("READER", "userByEmail", "Alice@Example.com"), g("READER", "user:alice@example.com")),
    (AccessEntry("roles/bigquery.dataEditor", "groupByEmail", "t@example.com"),
     g("WRITER", "group:t@example.com")),
    (AccessEntry("OWNER", "userByEmail", "etl@p.iam.gserviceaccount.com"),
     g("OWNER", "serviceAccount:etl@p.iam.gserviceaccount.com")),
    (AccessEntry("READER", "domain", "example.com"), g("READER", "domain:example.com")),
    (AccessEntry("READER", "iamMember", "user:bob@example.com"), g("READER", "user:bob@example.com")),
    *((e, None) for e in UNMANAGED),
])
def test_which_entries_are_member_grants(entry, expected):
    assert grant_of(DS, entry) == expected


def test_entry_for_round_trips():
    for grant in (g("READER", "user:a@example.com"), g("WRITER", "group:t@example.com"),
                  g("OWNER", "serviceAccount:x@p.iam.gserviceaccount.com"),
                  g("READER", "domain:example.com")):
        assert grant_of(DS, entry_for(grant)) == grant


def test_plan_adds_removes_and_reports_drift_keeping_unmanaged():
    keep, new, old = (g("READER", "user:keep@example.com"), g("WRITER", "user:new@example.com"),
                      g("READER", "group:old@example.com"))
    console = g("OWNER", "user:console@example.com")
    live = [*UNMANAGED, entry_for(keep), entry_for(old), entry_for(console)]
    plan = plan_dataset(DS, [keep, new, g("READER", "user:x@example.com", "other.ds")], live,
                        applied(keep, old))
    assert plan.add == (new,)
    assert plan.remove == (old,)
    assert plan.drift == (console,) and plan.reverted == () and plan.adopted == ()
    assert [grant_of(DS, e) for e in plan.entries if grant_of(DS, e)] == [keep, console, new]
    assert [e for e in plan.entries if grant_of(DS, e) is None] == UNMANAGED
    assert read_state(plan.labels) == read_state(applied(keep, new))
    text = render_plans([plan])
    assert "+ WRITER user:new@example.com" in text
    assert "- READER group:old@example.com" in text
    assert "! OWNER  user:console@example.com   (drift" in text
    assert "= authorized view acme-prod.shared.v_orders   (not managed by hakobu, kept)" in text
    assert "= authorized dataset acme-prod.marts" in text
    assert "= OWNER specialGroup:projectOwners" in text
    assert text.endswith("Plan: 1 to add, 1 to remove, 1 drift.")


def test_revert_and_adopt_policies():
    console = g("READER", "user:console@example.com")
    live = [OWNERS, entry_for(console)]
    revert = plan_dataset(DS, [], live, {}, policy="revert")
    assert revert.reverted == (console,) and list(revert.entries) == [OWNERS]
    assert "will be revoked" in render_plans([revert])
    adopt = plan_dataset(DS, [], live, {}, policy="adopt")
    assert adopt.adopted == (console,) and list(adopt.entries) == live
    assert read_state(adopt.labels) == read_state(applied(console))
    assert not adopt.changes_pending and adopt.needs_write


def test_explicit_revoke_removes_that_members_drift_only():
    a, b = g("READER", "user:a@example.com"), g("READER", "user:b@example.com")
    plan = plan_dataset(DS, [], [entry_for(a), entry_for(b)], {}, revoke={"user:a@example.com"})
    assert plan.reverted == (a,) and plan.drift == (a, b)


def test_real_bigquery_defaults_never_lock_hakobu_out():
    """Real BigQuery gives a new dataset project-role groups and makes its creator OWNER."""
    me = "serviceAccount:hakobu@ops.iam.gserviceaccount.com"
    defaults = [AccessEntry("WRITER", "specialGroup", "projectWriters"), OWNERS,
                AccessEntry("READER", "specialGroup", "projectReaders"),
                AccessEntry("OWNER", "userByEmail", "hakobu@ops.iam.gserviceaccount.com")]
    plan = plan_dataset(DS, [], defaults, {}, policy="revert", protect={me})
    assert plan.drift == () and not plan.needs_write and list(plan.entries) == defaults
    assert f"OWNER {me} (the identity hakobu runs as; never revoked)" in plan.unmanaged
    # once hakobu applied it, dropping the row from the CSV does not revoke it either
    mine = g("OWNER", me)
    plan = plan_dataset(DS, [], defaults, applied(mine), protect={me})
    assert plan.remove == () and list(plan.entries) == defaults


def test_role_change_is_an_add_and_a_remove():
    reader, writer = g("READER", "user:a@example.com"), g("WRITER", "user:a@example.com")
    plan = plan_dataset(DS, [writer], [entry_for(reader)], applied(reader))
    assert plan.add == (writer,) and plan.remove == (reader,)


def test_grant_removed_in_the_console_is_restored_and_flagged():
    a = g("READER", "user:a@example.com")
    plan = plan_dataset(DS, [a], [], applied(a))
    assert plan.add == (a,) and a in plan.restored
    assert "(was removed outside hakobu)" in render_plans([plan])


def test_iam_role_spelling_matches_the_csv_and_is_not_rewritten():
    live = [AccessEntry("roles/bigquery.dataViewer", "userByEmail", "A@example.com")]
    plan = plan_dataset(DS, [g("READER", "user:a@example.com")], live,
                        applied(g("READER", "user:a@example.com")))
    assert not plan.needs_write and list(plan.entries) == live


def test_missing_dataset_plans_nothing():
    plan = plan_dataset(DS, [g("READER", "user:a@example.com")], None)
    assert not plan.exists and not plan.needs_write
    assert "dataset not found, skipped; 1 grant(s) wait for it" in render_plans([plan])


def test_no_changes_summary():
    assert render_plans([plan_dataset(DS, [], [], {})]).endswith("No changes.")


def test_state_labels_keep_other_labels_and_blank_unused_chunks():
    grants = [g("READER", f"user:u{i}@example.com") for i in range(13)]
    labels = state_labels(DS, grants, {"team": "data"})
    assert labels["team"] == "data"
    assert sorted(k for k in labels if k.startswith(STATE_LABEL_PREFIX)) == [
        "hakobu-grants-00", "hakobu-grants-01", "hakobu-grants-02"]
    assert all(re.fullmatch(r"[a-z2-7]{1,63}", v) for k, v in labels.items()
               if k.startswith(STATE_LABEL_PREFIX))
    smaller = state_labels(DS, grants[:2], labels)
    assert smaller["hakobu-grants-01"] == "" and smaller["hakobu-grants-02"] == ""
    assert read_state(smaller) == read_state(state_labels(DS, grants[:2], {}))


# ---------------------------------------------------------------------------------------------
# properties: applying a plan reaches the CSV, keeps unmanaged entries, and is a fixed point

_members = st.sampled_from(["user:a@example.com", "user:b@example.com", "group:g@example.com",
                            "serviceAccount:s@p.iam.gserviceaccount.com", "domain:example.com"])
_grants = st.builds(Grant, st.just(DS), st.sampled_from(["READER", "WRITER", "OWNER"]), _members)
_spelling = {"READER": ["READER", "roles/bigquery.dataViewer"],
             "WRITER": ["WRITER", "roles/bigquery.dataEditor"],
             "OWNER": ["OWNER", "roles/bigquery.dataOwner"]}


@st.composite
def _live_entry(draw):
    if draw(st.booleans()):
        return draw(st.sampled_from(UNMANAGED))
    grant = draw(_grants)
    entry = entry_for(grant)
    props = entry.to_api_repr()
    props["role"] = draw(st.sampled_from(_spelling[grant.role]))
    if draw(st.booleans()) and not grant.member.startswith("serviceAccount"):
        props = {"role": props["role"], "iamMember": grant.member}
    return AccessEntry.from_api_repr(props)


def _key(entry):
    return json.dumps(entry.to_api_repr(), sort_keys=True)


def _grants_of(entries):
    return {grant_of(DS, e) for e in entries} - {None}


@settings(max_examples=150, deadline=None)
@given(desired=st.sets(_grants), live=st.lists(_live_entry(), max_size=12),
       state=st.sets(_grants), policy=st.sampled_from(["report", "revert", "adopt"]))
def test_applying_a_plan_reaches_the_csv_and_keeps_unmanaged(desired, live, state, policy):
    plan = plan_dataset(DS, desired, live, state_labels(DS, state, {}), policy=policy)
    after = list(plan.entries)
    # every desired grant is live afterwards
    assert desired <= _grants_of(after)
    # unmanaged entries are kept, exactly as they were
    assert sorted(_key(e) for e in after if grant_of(DS, e) is None) == \
        sorted(_key(e) for e in live if grant_of(DS, e) is None)
    # only grants that were desired, or drift the policy leaves in place, remain
    kept_drift = set(plan.drift) - set(plan.reverted)
    assert _grants_of(after) == desired | kept_drift
    if policy == "revert":
        assert _grants_of(after) == desired
    # drift is never something hakobu applied
    assert not set(plan.drift) & state
    assert set(plan.remove) <= state - desired
    # a second plan on the result (the CSV now holding adopted drift) changes nothing
    again = plan_dataset(DS, desired | set(plan.adopted), after, plan.labels, policy=policy)
    assert not again.needs_write and not again.changes_pending
    assert set(again.drift) == (kept_drift - set(plan.adopted))
