"""The naming contract: the BigQuery (and Dagster) name of every MySQL table and column name.

MySQL accepts almost any name in backticks — spaces, `$`, `-`, dots, non-ASCII letters, reserved
words, leading digits, up to 64 characters of the Basic Multilingual Plane. BigQuery does not:
a column name is letters, digits and underscores, starts with a letter or an underscore, has at
most 300 characters, is compared without case, and may not start with `_TABLE_`, `_FILE_`,
`_PARTITION`, `_ROW_TIMESTAMP`, `__ROOT__` or `_COLON_`; in a table name `$` is a partition
decorator and `.` separates dataset and table; a Dagster asset-key part must match
`^[A-Za-z0-9_]+$`. hakobu's own tables and columns start with `_hakobu`.

So every name goes through one pure, deterministic function (no state, no configuration: the
same MySQL name gives the same BigQuery name in every run, process, tenant and release):

- a name that is already valid is kept **unchanged** — every delivery made before this contract
  keeps its names (`orders`, `Members`, `order`, `select`: reserved words are quoted, never
  renamed);
- any other name is **mapped**: Unicode compatibility-decomposed and reduced to ASCII (`é` → `e`,
  `ﬁ` → `fi`, `ß` → `ss`, `ø` → `o`; letters without an ASCII form, such as `名前`, drop out),
  lower-cased, every run of
  other characters made one `_`, outer underscores stripped, `_` put before a leading digit,
  `col`/`table` when nothing is left, cut to fit, and suffixed with `_` and the first
  6 hex digits of the SHA-256 of the original name (UTF-8) — the mapping lost information
  (`my col` and `my-col` both read `my_col`), the suffix keeps them apart and keeps a mapped
  name from ever equalling a kept one by accident: `my col` → `my_col_7a2881`, `ord$2024` →
  `ord_2024_a76493`, `2nd` → `_2nd_c21365`, `名前` → `col_7ec262`.

The output of the mapping is itself valid, so the function is idempotent. Mapped names can
still collide with another name of the same table or dataset — case-insensitively, as BigQuery
compares column names (a hash collision, or `Orders` beside `orders`): `collisions` finds them
and callers refuse the table (or the tenant file) naming both originals; nothing is ever merged.
The original name is recorded where the mapped one lives: as the BigQuery column description
(`source_note`) and in the materialization metadata.
"""

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable

MAX_COLUMN = 300                  # BigQuery: characters in a column name
# BigQuery allows 1,024 characters in a table name; hakobu's staging and shadow tables put a
# prefix, a tenant id and a run id around it, so a name hakobu makes stays well below that.
# (MySQL's own limit is 64 characters: a name kept unchanged is always short enough.)
MAX_TABLE = 256
HASH_DIGITS = 6
RESERVED_COLUMN_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__",
                            "_colon_", "_hakobu")
RESERVED_TABLE_PREFIXES = ("_hakobu",)
_VALID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Latin letters that compatibility decomposition leaves as they are
_LATIN = str.maketrans({"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                        "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ł": "l",
                        "Ł": "L", "þ": "th", "Þ": "TH", "ı": "i"})


def valid_column(name: str) -> bool:
    """Whether BigQuery takes `name` as a column name as it is (and hakobu does not own it)."""
    return (bool(_VALID.fullmatch(name)) and len(name) <= MAX_COLUMN
            and not name.lower().startswith(RESERVED_COLUMN_PREFIXES))


def valid_table(name: str) -> bool:
    """Whether `name` serves as it is as a BigQuery table name and a Dagster asset-key part
    (one rule for both: the asset `customer/<name>` is the table `<dataset>.<name>`)."""
    return (bool(_VALID.fullmatch(name)) and len(name) <= MAX_TABLE
            and not name.lower().startswith(RESERVED_TABLE_PREFIXES))


def column_name(mysql_name: str) -> str:
    """The BigQuery column a MySQL column is delivered into."""
    return mysql_name if valid_column(mysql_name) else _mapped(mysql_name, MAX_COLUMN, "col")


bq_name = column_name


def table_name(mysql_name: str) -> str:
    """The BigQuery table (and the Dagster asset-key part) a MySQL table is delivered into."""
    return mysql_name if valid_table(mysql_name) else _mapped(mysql_name, MAX_TABLE, "table")


LIVE_SUFFIX = "_live"
CHANGE_LOG_PREFIX = "_hakobu_cl_"


def _fitted(name: str, room: int) -> str:
    """`name` cut to `room` characters, with 6 hex digits of its hash when it had to be cut
    (two long names sharing a beginning stay apart)."""
    if len(name) <= room:
        return name
    suffix = "_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    return name[:room - len(suffix)] + suffix


def live_view(bq_table: str) -> str:
    """The view showing a realtime table's latest state (the table overlaid by the changes
    not merged yet): `<table>_live`, beside the table in the customer's dataset."""
    return _fitted(bq_table, MAX_TABLE - len(LIVE_SUFFIX)) + LIVE_SUFFIX


def change_log(bq_table: str) -> str:
    """A realtime table's change log: `_hakobu_cl_<table>` (hakobu's prefix: no source table
    is ever delivered under it)."""
    return CHANGE_LOG_PREFIX + _fitted(bq_table, MAX_TABLE - len(CHANGE_LOG_PREFIX))


def _mapped(name: str, limit: int, empty: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.translate(_LATIN))
    ascii_ = "".join(c for c in decomposed if ord(c) < 128)
    base = re.sub(r"[^a-z0-9]+", "_", ascii_.lower()).strip("_") or empty
    if base[0].isdigit():
        base = "_" + base
    suffix = "_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    return base[:limit - len(suffix)].rstrip("_") + suffix


def collisions(names: Iterable[str], mapper: Callable[[str], str] = column_name
               ) -> list[tuple[str, list[str]]]:
    """Names that land in one BigQuery name, compared without case (BigQuery column names are
    case-insensitive; a dataset can be made case-insensitive for tables, and the emulator is):
    [(the BigQuery name, [the originals])], in the order first seen."""
    groups: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for n in names:
        mapped = mapper(n)
        key = mapped.lower()
        if n not in groups.setdefault(key, []):
            groups[key].append(n)
        shown.setdefault(key, mapped)
    return [(shown[k], v) for k, v in groups.items() if len(v) > 1]


def source_note(mysql_name: str, kind: str = "column") -> str:
    """What the BigQuery column's description says about a mapped name (the original, exactly;
    SQL quoting is the caller's: hakobu.sqlquote.bq_string)."""
    return f"MySQL {kind}: {mysql_name}"


def with_note(description: str | None, note: str | None) -> str | None:
    """A description made of hakobu's parts (the warehouse's form marker, the original name),
    so one never clobbers the other."""
    parts = [p for p in (description, note) if p]
    return "; ".join(parts) if parts else None


def renamed(names: Iterable[str], mapper: Callable[[str], str] = column_name) -> dict[str, str]:
    """{original: BigQuery name} of the names that are mapped (for metadata and messages)."""
    return {n: mapper(n) for n in names if mapper(n) != n}
