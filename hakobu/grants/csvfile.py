"""permissions.csv: one dataset grant per row, validated in full before anything is applied.

    dataset,role,member
    acme-prod.acme_dwh,READER,user:alice@example.com

Roles are normalised to BigQuery's legacy dataset roles (READER, WRITER, OWNER) because that is
the form the API returns for `roles/bigquery.dataViewer` & co., so the CSV and the live entries
compare without a second mapping. Members are `kind:value` with the kind spelt like IAM
(`user`, `group`, `serviceAccount`, `domain`) and the value lower-cased (e-mail addresses and
domains are case-insensitive in Google identity).

Writing keeps rows sorted (dataset, role, member) and deduplicated; rows that were already there
are written back with the text they had, so a `hakobu grant` shows as a one-line diff.
"""

import csv
import difflib
import io
import os
import re
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from hakobu.errors import ConfigError, ConfigErrors

HEADER = ("dataset", "role", "member")
ROLES = ("READER", "WRITER", "OWNER")
_ROLE_ALIASES = {
    "reader": "READER", "writer": "WRITER", "owner": "OWNER",
    "roles/bigquery.dataviewer": "READER",
    "roles/bigquery.dataeditor": "WRITER",
    "roles/bigquery.dataowner": "OWNER",
}
MEMBER_KINDS = ("user", "group", "serviceAccount", "domain")
_KIND_BY_LOWER = {k.lower(): k for k in MEMBER_KINDS}
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SA_SUFFIX = ".gserviceaccount.com"
_FORMAT_HINT = "see 'permissions.csv' in README.md"


@dataclass(frozen=True, order=True)
class Grant:
    """One normalised grant: `role` is READER/WRITER/OWNER, `member` is `kind:value`."""

    dataset: str
    role: str
    member: str

    def __str__(self) -> str:
        return f"{self.dataset} {self.role} {self.member}"


@dataclass(frozen=True)
class GrantRow:
    """A grant with where it was read from; `fields` is the text as written, kept on rewrite."""

    grant: Grant
    line: int = 0
    fields: tuple[str, str, str] | None = None

    def text_fields(self) -> tuple[str, str, str]:
        g = self.grant
        return self.fields or (g.dataset, g.role, g.member)


def normalise_role(text: str) -> str:
    role = _ROLE_ALIASES.get(text.strip().lower())
    if role is None:
        raise ValueError(f"unknown role {text.strip()!r}; use READER, WRITER or OWNER "
                         "(or roles/bigquery.dataViewer, dataEditor, dataOwner)")
    return role


def normalise_member(text: str) -> str:
    """`kind:value` with the IAM spelling of kind and a lower-cased value; ValueError says why not."""
    text = text.strip()
    kind, sep, value = text.partition(":")
    if not sep:
        example = f"user:{text}" if "@" in text else f"domain:{text}"
        raise ValueError(f"member {text!r} has no kind; write it as {example} "
                         f"(kinds: {', '.join(MEMBER_KINDS)})")
    canonical_kind = _KIND_BY_LOWER.get(kind.strip().lower())
    if canonical_kind is None:
        raise ValueError(f"member {text!r}: unknown kind {kind!r}; use one of "
                         f"{', '.join(k + ':' for k in MEMBER_KINDS)} (special groups, views and "
                         "allUsers are not managed by permissions.csv)")
    value = value.strip().lower()
    if canonical_kind == "domain":
        if not _DOMAIN.match(value):
            raise ValueError(f"member {text!r}: {value!r} is not a domain name such as "
                             "example.com")
        return f"domain:{value}"
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError(f"member {text!r}: {value!r} is not an e-mail address such as "
                         "alice@example.com")
    if canonical_kind == "serviceAccount" and not value.endswith(_SA_SUFFIX):
        raise ValueError(f"member {text!r}: a service account address ends in {_SA_SUFFIX}; "
                         "for a person write user:, for a Google group group:")
    if canonical_kind in ("user", "group") and value.endswith(_SA_SUFFIX):
        raise ValueError(f"member {text!r}: {value} is a service account; write "
                         f"serviceAccount:{value}")
    return f"{canonical_kind}:{value}"


def check_dataset(text: str, managed: Collection[str]) -> str:
    dataset = text.strip()
    if dataset in managed:
        return dataset
    if ":" in dataset and dataset.replace(":", ".", 1) in managed:
        raise ValueError(f"dataset {dataset!r}: write it as "
                         f"{dataset.replace(':', '.', 1)} (project.dataset)")
    if dataset.count(".") != 1:
        raise ValueError(f"dataset {dataset!r} is not written as project.dataset")
    close = difflib.get_close_matches(dataset, list(managed), n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"dataset {dataset!r} is not a dataset hakobu manages; {hint}datasets come "
                     "from tenants/*.yaml (destination), tenants/warehouse.yaml and "
                     "tenants/datasets.yaml")


def parse_grant(dataset: str, role: str, member: str, managed: Collection[str]) -> Grant:
    """Validate one grant given on the command line; ValueError lists every problem."""
    problems = []
    parsed = []
    for check, arg in ((lambda v: check_dataset(v, managed), dataset), (normalise_role, role),
                       (normalise_member, member)):
        try:
            parsed.append(check(arg))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return Grant(*parsed)


def read_rows(path: Path, managed: Collection[str]) -> list[GrantRow]:
    """Parse and validate the whole file; raise ConfigErrors naming every bad line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigErrors([ConfigError(
            f"{path}: missing", hint="create it with the header line 'dataset,role,member' "
                                     "(or run `hakobu grant`, which creates it)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(f"{path}: cannot read: {exc}",
                                        hint="save it as UTF-8 text")]) from exc
    errors: list[ConfigError] = []
    rows: list[GrantRow] = []
    seen: dict[Grant, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    header_seen = False
    for record in _records(reader, path, errors):
        line, fields = record
        if not header_seen:
            header_seen = True
            if tuple(f.lower() for f in fields) != HEADER:
                errors.append(ConfigError(
                    f"{path}:{line}: header is {','.join(fields)!r}",
                    hint="the first line must be exactly 'dataset,role,member'"))
                break
            continue
        if len(fields) != 3:
            errors.append(ConfigError(
                f"{path}:{line}: expected 3 fields (dataset,role,member), found {len(fields)}",
                hint="one grant per line; quote a field that contains a comma"))
            continue
        try:
            grant = parse_grant(*fields, managed)
        except ValueError as exc:
            errors.append(ConfigError(f"{path}:{line}: {exc}", hint=_FORMAT_HINT))
            continue
        if grant in seen:
            errors.append(ConfigError(
                f"{path}:{line}: duplicate of line {seen[grant]} ({grant})",
                hint="delete one of the two lines"))
            continue
        seen[grant] = line
        rows.append(GrantRow(grant, line, (fields[0], fields[1], fields[2])))
    if not header_seen and not errors:
        errors.append(ConfigError(f"{path}:1: empty file",
                                  hint="the first line must be exactly 'dataset,role,member'"))
    if errors:
        raise ConfigErrors(errors)
    return rows


def _records(reader, path: Path, errors: list[ConfigError]):
    """(line number, stripped fields) for every non-blank record."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            errors.append(ConfigError(f"{path}:{reader.line_num}: malformed CSV: {exc}",
                                      hint="check the quotes on that line"))
            return
        fields = [f.strip() for f in fields]
        if any(fields):
            yield reader.line_num, fields


def load_rows(config) -> list[GrantRow]:
    """The validated rows of config.permissions_file."""
    return read_rows(config.permissions_file, config.managed_datasets())


def render(rows: Iterable[GrantRow | Grant], newline: str = "\n") -> str:
    """The file text: header, then the rows sorted by (dataset, role, member), each once."""
    unique: dict[Grant, GrantRow] = {}
    for row in rows:
        row = row if isinstance(row, GrantRow) else GrantRow(row)
        unique.setdefault(row.grant, row)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(HEADER)
    for grant in sorted(unique):
        writer.writerow(unique[grant].text_fields())
    return out.getvalue()


def write_rows(path: Path, rows: Iterable[GrantRow | Grant]) -> bool:
    """Rewrite the file atomically if its content changes; True when it did."""
    path = Path(path)
    try:
        old = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        old = None
    newline = "\r\n" if old and old.split("\n", 1)[0].endswith("\r") else "\n"
    text = render(rows, newline)
    if text == old:
        return False
    fd, tmp = tempfile.mkstemp(prefix=".permissions.", suffix=".csv", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def set_member_role(rows: list[GrantRow], grant: Grant) -> tuple[list[GrantRow], list[Grant]]:
    """The rows with `grant` as the member's only role on that dataset; also the grants replaced."""
    replaced = [r.grant for r in rows if r.grant.dataset == grant.dataset
                and r.grant.member == grant.member and r.grant != grant]
    kept = [r for r in rows if r.grant not in replaced]
    if not any(r.grant == grant for r in kept):
        kept.append(GrantRow(grant))
    return kept, replaced


def drop_member(rows: list[GrantRow], dataset: str, member: str
                ) -> tuple[list[GrantRow], list[Grant]]:
    """The rows without any grant of `member` on `dataset`; also the grants dropped."""
    dropped = [r.grant for r in rows if r.grant.dataset == dataset and r.grant.member == member]
    return [r for r in rows if r.grant not in dropped], dropped
