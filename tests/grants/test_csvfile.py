"""permissions.csv: parsing, normalisation, every error with its line, stable writing."""

import pytest

from hakobu.errors import ConfigErrors
from hakobu.grants.csvfile import (Grant, GrantRow, drop_member, normalise_member,
                                   normalise_role, read_rows, render, set_member_role,
                                   write_rows)

MANAGED = {"acme-prod.acme_dwh", "acme-prod.beta_dwh", "internal-dwh.warehouse"}


def write(tmp_path, text):
    path = tmp_path / "permissions.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,expected", [
    ("READER", "READER"), ("reader", "READER"), (" Writer ", "WRITER"), ("OWNER", "OWNER"),
    ("roles/bigquery.dataViewer", "READER"), ("roles/bigquery.dataEditor", "WRITER"),
    ("roles/bigquery.dataOwner", "OWNER"),
])
def test_roles_normalise_to_the_legacy_form_bigquery_returns(text, expected):
    assert normalise_role(text) == expected


@pytest.mark.parametrize("bad", ["VIEWER", "roles/bigquery.user", "", "roles/owner"])
def test_unknown_roles_are_rejected(bad):
    with pytest.raises(ValueError, match="READER, WRITER or OWNER"):
        normalise_role(bad)


@pytest.mark.parametrize("text,expected", [
    ("user:Alice@Example.COM", "user:alice@example.com"),
    ("User: bob@example.com", "user:bob@example.com"),
    ("group:data-team@example.com", "group:data-team@example.com"),
    ("serviceaccount:etl@proj-1.iam.gserviceaccount.com",
     "serviceAccount:etl@proj-1.iam.gserviceaccount.com"),
    ("domain:Example.co.jp", "domain:example.co.jp"),
    ("user:o'brien+bq@sub.example.com", "user:o'brien+bq@sub.example.com"),
])
def test_members_normalise(text, expected):
    assert normalise_member(text) == expected


@pytest.mark.parametrize("bad,why", [
    ("alice@example.com", "no kind; write it as user:alice@example.com"),
    ("specialGroup:projectOwners", "unknown kind"),
    ("allUsers", "no kind"),
    ("user:alice", "not an e-mail"),
    ("user:alice@@example.com", "not an e-mail"),
    ("user:.alice@example.com", "not an e-mail"),
    ("group:team@example", "not an e-mail"),
    ("domain:exa_mple.com", "not a domain"),
    ("domain:alice@example.com", "not a domain"),
    ("serviceAccount:alice@example.com", "ends in .gserviceaccount.com"),
    ("user:etl@p.iam.gserviceaccount.com", "write serviceAccount:etl@"),
])
def test_malformed_members_say_why(bad, why):
    with pytest.raises(ValueError, match=why.replace("+", r"\+")):
        normalise_member(bad)


def test_read_normalises_and_keeps_line_numbers(tmp_path):
    path = write(tmp_path, "dataset,role,member\n"
                           "acme-prod.acme_dwh,roles/bigquery.dataViewer,user:Alice@example.com\n"
                           "\n"
                           "internal-dwh.warehouse, WRITER ,group:team@example.com\n")
    rows = read_rows(path, MANAGED)
    assert [(r.grant, r.line) for r in rows] == [
        (Grant("acme-prod.acme_dwh", "READER", "user:alice@example.com"), 2),
        (Grant("internal-dwh.warehouse", "WRITER", "group:team@example.com"), 4),
    ]


def test_header_only_means_no_grants(tmp_path):
    assert read_rows(write(tmp_path, "dataset,role,member\n"), MANAGED) == []


def test_every_bad_row_is_reported_with_file_and_line(tmp_path):
    path = write(tmp_path, "dataset,role,member\n"
                           "acme-prod.acme_dwh,READER,user:ok@example.com\n"
                           "acme-prod.acme_dwx,READER,user:a@example.com\n"
                           "acme-prod.acme_dwh,VIEWER,user:b@example.com\n"
                           "acme-prod.acme_dwh,READER,c@example.com\n"
                           "acme-prod.acme_dwh,reader,user:OK@example.com\n"
                           "acme-prod.acme_dwh,READER\n"
                           "acme-prod:beta_dwh,READER,user:d@example.com\n")
    with pytest.raises(ConfigErrors) as info:
        read_rows(path, MANAGED)
    errors = [str(e) for e in info.value.errors]
    assert len(errors) == 6
    assert errors[0].startswith(f"{path}:3: dataset 'acme-prod.acme_dwx' is not a dataset "
                                "hakobu manages; did you mean acme-prod.acme_dwh")
    assert errors[1].startswith(f"{path}:4: unknown role 'VIEWER'")
    assert errors[2].startswith(f"{path}:5: member 'c@example.com' has no kind")
    assert errors[3].startswith(f"{path}:6: duplicate of line 2")
    assert errors[4].startswith(f"{path}:7: expected 3 fields")
    assert errors[5].startswith(f"{path}:8: dataset 'acme-prod:beta_dwh': write it as "
                                "acme-prod.beta_dwh")
    assert "6 configuration errors" in str(info.value)


@pytest.mark.parametrize("text", ["dataset,member,role\n", "permission,user\n", ""])
def test_wrong_or_missing_header(tmp_path, text):
    path = write(tmp_path, text + "acme-prod.acme_dwh,READER,user:a@example.com\n" if text else "")
    with pytest.raises(ConfigErrors, match=r"permissions.csv:1: .*'dataset,role,member'"):
        read_rows(path, MANAGED)


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(ConfigErrors, match="missing .*dataset,role,member"):
        read_rows(tmp_path / "permissions.csv", MANAGED)


def test_render_sorts_dedups_and_keeps_existing_text(tmp_path):
    path = write(tmp_path, "dataset,role,member\n"
                           "internal-dwh.warehouse,READER,group:team@example.com\n"
                           "acme-prod.acme_dwh,roles/bigquery.dataViewer,user:Alice@example.com\n")
    rows = read_rows(path, MANAGED)
    new = Grant("acme-prod.acme_dwh", "OWNER", "user:zed@example.com")
    text = render([*rows, GrantRow(new), GrantRow(rows[0].grant)])
    assert text == ("dataset,role,member\n"
                    "acme-prod.acme_dwh,OWNER,user:zed@example.com\n"
                    "acme-prod.acme_dwh,roles/bigquery.dataViewer,user:Alice@example.com\n"
                    "internal-dwh.warehouse,READER,group:team@example.com\n")


def test_write_is_stable_and_only_touches_changed_files(tmp_path):
    path = write(tmp_path, "dataset,role,member\r\n"
                           "acme-prod.acme_dwh,READER,user:a@example.com\r\n")
    rows = read_rows(path, MANAGED)
    before = path.read_bytes()
    assert write_rows(path, rows) is False
    assert path.read_bytes() == before
    g = Grant("acme-prod.beta_dwh", "READER", "user:b@example.com")
    assert write_rows(path, [*rows, g]) is True
    assert path.read_bytes() == before + b"acme-prod.beta_dwh,READER,user:b@example.com\r\n"
    assert [r.grant for r in read_rows(path, MANAGED)] == [rows[0].grant, g]


def test_set_member_role_replaces_the_members_other_roles():
    a = Grant("acme-prod.acme_dwh", "READER", "user:a@example.com")
    other = Grant("acme-prod.beta_dwh", "READER", "user:a@example.com")
    rows = [GrantRow(a), GrantRow(other)]
    owner = Grant("acme-prod.acme_dwh", "OWNER", "user:a@example.com")
    new_rows, replaced = set_member_role(rows, owner)
    assert {r.grant for r in new_rows} == {owner, other} and replaced == [a]
    same, replaced = set_member_role(new_rows, owner)
    assert {r.grant for r in same} == {owner, other} and replaced == []
    dropped_rows, dropped = drop_member(same, "acme-prod.acme_dwh", "user:a@example.com")
    assert [r.grant for r in dropped_rows] == [other] and dropped == [owner]
