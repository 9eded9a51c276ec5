"""Applying permissions.csv against the BigQuery emulator."""

import pytest
from google.cloud import bigquery
from google.cloud.bigquery import AccessEntry

from hakobu.errors import ConfigErrors, GrantConflict
from hakobu.grants.apply import Change, apply_dataset_grants, apply_grants, plan_grants
from hakobu.grants.csvfile import Grant
from hakobu.grants.plan import render_plans


def _apply(env, **kw):
    return apply_grants(env.config(), settings=env.settings, **kw)


def test_add_then_remove_grants(grants_env):
    env = grants_env
    a = env.customer_a
    env.write_csv(f"{a},READER,user:Alice@example.com",
                  f"{a},roles/bigquery.dataEditor,group:etl-team@example.com",
                  f"{env.customer_b},OWNER,serviceAccount:loader@p-1.iam.gserviceaccount.com")
    report = _apply(env)
    assert not report.failed
    assert set(report.changes) == {
        Change(a, "add", "READER", "user:alice@example.com"),
        Change(a, "add", "WRITER", "group:etl-team@example.com"),
        Change(env.customer_b, "add", "OWNER",
               "serviceAccount:loader@p-1.iam.gserviceaccount.com")}
    assert env.member_entries(a) == {("READER", "userByEmail", "alice@example.com"),
                                     ("WRITER", "groupByEmail", "etl-team@example.com")}
    assert env.member_entries(env.customer_b) == {
        ("OWNER", "userByEmail", "loader@p-1.iam.gserviceaccount.com")}
    assert {r.dataset: r.status for r in report.results} == {
        a: "applied", env.customer_b: "applied", env.missing: "missing"}

    # a row leaves the CSV: hakobu applied it, so it is removed (not drift)
    env.write_csv(f"{a},READER,user:alice@example.com")
    report = _apply(env)
    assert report.changes == [Change(a, "remove", "WRITER", "group:etl-team@example.com"),
                              Change(env.customer_b, "remove", "OWNER",
                                     "serviceAccount:loader@p-1.iam.gserviceaccount.com")]
    assert report.drift == []
    assert env.member_entries(a) == {("READER", "userByEmail", "alice@example.com")}
    assert env.member_entries(env.customer_b) == set()


def test_second_apply_is_a_no_op(grants_env):
    env = grants_env
    env.write_csv(f"{env.customer_a},READER,user:a@example.com")
    _apply(env)
    etag = env.live(env.customer_a).etag
    report = _apply(env)
    assert report.changes == [] and not report.failed
    assert {r.status for r in report.results} == {"unchanged", "missing"}
    assert env.live(env.customer_a).etag == etag
    plans, errors = plan_grants(env.config(), settings=env.settings)
    assert errors == [] and not any(p.changes_pending for p in plans)


def test_role_change(grants_env):
    env = grants_env
    env.write_csv(f"{env.customer_a},READER,user:a@example.com")
    _apply(env)
    env.write_csv(f"{env.customer_a},OWNER,user:a@example.com")
    report = _apply(env)
    assert {(c.action, c.role) for c in report.changes} == {("add", "OWNER"), ("remove", "READER")}
    assert env.member_entries(env.customer_a) == {("OWNER", "userByEmail", "a@example.com")}


def test_console_grant_is_drift_reported_then_reverted(grants_env):
    env = grants_env
    a = env.customer_a
    env.write_csv(f"{a},READER,user:a@example.com")
    _apply(env)
    env.console_grant(a, AccessEntry("WRITER", "userByEmail", "intern@example.com"))

    report = _apply(env)  # policy report: found, kept
    assert report.changes == []
    assert report.drift == [Grant(a, "WRITER", "user:intern@example.com")]
    assert ("WRITER", "userByEmail", "intern@example.com") in env.member_entries(a)
    assert "drift: granted outside permissions.csv" in report.render()

    report = _apply(env, policy="revert")
    assert report.changes == [Change(a, "revert", "WRITER", "user:intern@example.com")]
    assert env.member_entries(a) == {("READER", "userByEmail", "a@example.com")}
    assert _apply(env).drift == []


def test_console_grant_adopted_into_the_csv(grants_env):
    env = grants_env
    a = env.customer_a
    env.write_csv(f"{a},READER,user:a@example.com")
    _apply(env)
    env.console_grant(a, AccessEntry("READER", "groupByEmail", "Finance@example.com"))
    before = env.live(a).access_entries

    report = _apply(env, policy="adopt")
    assert report.changes == [Change(a, "adopt", "READER", "group:finance@example.com")]
    assert env.csv.read_text() == ("dataset,role,member\n"
                                   f"{a},READER,group:finance@example.com\n"
                                   f"{a},READER,user:a@example.com\n")
    assert env.live(a).access_entries == before  # adopting changes no access
    # now it is managed: removing the row removes the grant
    env.write_csv(f"{a},READER,user:a@example.com")
    assert _apply(env).changes == [Change(a, "remove", "READER", "group:finance@example.com")]


def test_authorized_view_and_special_groups_survive(grants_env):
    env = grants_env
    client, retry = env.client, env.settings.retry()
    views = env.customer_b  # the view lives in B and is authorized on A
    client.create_table(bigquery.Table(f"{env.customer_a}.orders",
                                       schema=[bigquery.SchemaField("id", "INT64")]), retry=retry)
    view = bigquery.Table(f"{views}.v_orders")
    view.view_query = f"SELECT id FROM `{env.customer_a}.orders`"
    client.create_table(view, retry=retry)
    view_entry = AccessEntry(None, "view", {"projectId": "hakobu-test",
                                            "datasetId": views.split(".")[1],
                                            "tableId": "v_orders"})
    unmanaged = [view_entry, AccessEntry("OWNER", "specialGroup", "projectOwners"),
                 AccessEntry("READER", "iamMember", "allUsers")]
    ds = env.live(env.customer_a)
    ds.access_entries = [*unmanaged, AccessEntry("READER", "userByEmail", "drift@example.com")]
    client.update_dataset(ds, ["access_entries"], retry=retry)

    env.write_csv(f"{env.customer_a},WRITER,user:w@example.com")
    plans, _ = plan_grants(env.config(), settings=env.settings, policy="revert")
    text = render_plans(plans)
    assert "= authorized view hakobu-test." in text

    report = _apply(env, policy="revert")  # even revert keeps unmanaged entries
    assert {c.action for c in report.changes} == {"add", "revert"}
    live = env.live(env.customer_a).access_entries
    for entry in unmanaged:
        assert entry in live
    assert AccessEntry("WRITER", "userByEmail", "w@example.com") in live
    assert len(live) == 4


def test_concurrent_change_between_read_and_write_is_retried(grants_env, etag_proxy,
                                                            proxy_client):
    env = grants_env
    a = env.customer_a
    env.write_csv(f"{a},READER,user:a@example.com")
    concurrent = AccessEntry("READER", "groupByEmail", "someone-else@example.com")
    fired = []

    def someone_else_writes(project, dataset):
        if not fired:
            fired.append(dataset)
            env.console_grant(a, concurrent)  # lands after hakobu's read, before its write

    etag_proxy.before_write = someone_else_writes
    result = apply_dataset_grants(proxy_client, env.config(), a, settings=env.settings)
    assert etag_proxy.rejected == 1 and result.attempts == 2
    assert result.changes == (Change(a, "add", "READER", "user:a@example.com"),)
    live = env.live(a).access_entries
    assert concurrent in live  # the other writer's change was not overwritten
    assert AccessEntry("READER", "userByEmail", "a@example.com") in live
    assert result.plan.drift == (Grant(a, "READER", "group:someone-else@example.com"),)


def test_conflict_that_never_settles_is_reported_and_nothing_overwritten(grants_env, etag_proxy,
                                                                       proxy_client):
    env = grants_env
    a = env.customer_a
    env.write_csv(f"{a},READER,user:a@example.com")
    n = []

    def busy(project, dataset):
        n.append(1)
        env.console_grant(a, AccessEntry("READER", "userByEmail", f"u{len(n)}@example.com"))

    etag_proxy.before_write = busy
    with pytest.raises(GrantConflict, match="changed between read and write 3 times"):
        apply_dataset_grants(proxy_client, env.config(), a, settings=env.settings)
    assert etag_proxy.rejected == 3 and etag_proxy.writes == []
    assert env.member_entries(a) == {("READER", "userByEmail", f"u{i}@example.com")
                                     for i in (1, 2, 3)}

    # apply_grants reports it per dataset and still applies the others
    env.write_csv(f"{a},READER,user:a@example.com", f"{env.customer_b},READER,user:b@example.com")
    etag_proxy.before_write = lambda project, dataset: busy(project, dataset) \
        if dataset == a.split(".")[1] else None
    report = apply_grants(env.config(), settings=env.settings,
                          client_for=lambda project: proxy_client)
    assert [r.dataset for r in report.failed] == [a]
    assert isinstance(report.failed[0].error, GrantConflict)
    assert env.member_entries(env.customer_b) == {("READER", "userByEmail", "b@example.com")}


def test_bad_csv_changes_nothing_and_names_the_rows(grants_env):
    env = grants_env
    env.write_csv(f"{env.customer_a},READER,user:good@example.com",
                  f"{env.customer_a},READER,user:not-an-email",
                  f"{env.customer_b},ADMIN,user:b@example.com")
    etags = {d: env.live(d).etag for d in (env.customer_a, env.customer_b)}
    with pytest.raises(ConfigErrors) as info:
        _apply(env)
    text = str(info.value)
    assert f"{env.csv}:3: member 'user:not-an-email'" in text
    assert f"{env.csv}:4: unknown role 'ADMIN'" in text
    assert {d: env.live(d).etag for d in etags} == etags
    assert env.member_entries(env.customer_a) == set()


def test_new_dataset_gets_its_grants_right_after_creation(grants_env):
    env = grants_env
    env.write_csv(f"{env.missing},READER,domain:example.com")
    result = apply_dataset_grants(env.client, env.config(), env.missing, settings=env.settings)
    assert result.status == "missing" and result.changes == ()

    env.client.create_dataset(env.missing, retry=env.settings.retry())  # the pipeline creates it
    result = apply_dataset_grants(env.client, env.config(), env.missing, settings=env.settings)
    assert result.status == "applied"
    assert env.member_entries(env.missing) == {("READER", "domain", "example.com")}


def test_own_identity_comes_from_service_account_credentials():
    from types import SimpleNamespace

    from hakobu.grants.apply import own_identity

    def client(email):
        return SimpleNamespace(_credentials=SimpleNamespace(service_account_email=email))

    assert own_identity(client("Hakobu@ops.iam.gserviceaccount.com")) == {
        "serviceAccount:hakobu@ops.iam.gserviceaccount.com"}
    assert own_identity(client("default")) == frozenset()  # GCE credentials before refresh
    assert own_identity(SimpleNamespace(_credentials=object())) == frozenset()
