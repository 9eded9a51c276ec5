"""The text of binlog query events, read just enough to keep the stream honest (used by
resources.binlog_reader): transaction control told from DDL and from statement-logged changes,
and the tables a TRUNCATE / DROP / RENAME / ALTER / CREATE OR REPLACE names — exactly, after
comments (an executable /*! ... */ one is its text) and strings are dropped.
"""

import re

CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA", "START", ""})
DDL = frozenset({"CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "GRANT", "REVOKE", "ANALYZE",
                  "OPTIMIZE", "REPAIR", "CHECK", "FLUSH", "INSTALL", "UNINSTALL", "SET"})
MODIFIERS = frozenset({"TABLE", "TABLES", "TEMPORARY", "IF", "EXISTS", "NOT", "ONLINE",
                        "IGNORE", "OR", "REPLACE"})
# a comment (an executable one, /*! … */ or /*M! … */, is its text), a `quoted` identifier, a
# "double-quoted" one (ANSI_QUOTES; else a string: over-inclusive), a 'string', a word, a sign
TOKEN = re.compile(r"/\*(M?!\d*)?(.*?)\*/|--(?:\s[^\n]*)?(?=\n|$)|#[^\n]*|`((?:[^`]|``)*)`"
                    r"""|"((?:[^"\\]|\\.|"")*)"|'(?:[^'\\]|\\.|'')*'|([\w$]+)|(\S)""", re.S)


def tokens(sql: str, depth: int = 0) -> list[tuple[str, str]]:
    """('id', word), ('q', quoted identifier), ('p', punctuation); comments and strings
    dropped."""
    out: list[tuple[str, str]] = []
    for m in TOKEN.finditer(sql or ""):
        executable, body, back, dquoted, word, punct = m.groups()
        if executable is not None and depth < 3:
            out.extend(tokens(body, depth + 1))
        elif back is not None:
            out.append(("q", back.replace("``", "`")))
        elif dquoted is not None:
            out.append(("q", dquoted.replace('""', '"')))
        elif word is not None:
            out.append(("id", word))
        elif punct is not None:
            out.append(("p", punct))
    return out


def word(words: list, i: int) -> str:
    """The i-th token as an upper-case keyword ('' if it is none: quoted, a sign, the end)."""
    return words[i][1].upper() if i < len(words) and words[i][0] == "id" else ""


def table_ref(words: list, i: int, default: str) -> tuple[tuple[str, str] | None, int]:
    """The table reference at i: `schema`.`table`, or a bare name in the default schema."""
    if i >= len(words) or words[i][0] == "p":
        return None, i
    if i + 2 < len(words) and words[i + 1] == ("p", ".") and words[i + 2][0] != "p":
        return (words[i][1], words[i + 2][1]), i + 3
    return (default, words[i][1]), i + 1


def references(words: list, default: str) -> set[tuple[str, str]]:
    """Every name of the text read as a table reference (over-inclusive: a column named like a
    watched table in its schema counts too)."""
    refs, i = set(), 0
    while i < len(words):
        ref, j = table_ref(words, i, default)
        if ref is not None:
            refs.add(ref)
        i = max(j, i + 1)
    return refs


def ddl_targets(words: list, default: str) -> tuple[set[tuple[str, str]], set[str]]:
    """The tables a TRUNCATE, DROP TABLE, RENAME TABLE, ALTER TABLE or CREATE OR REPLACE TABLE
    changes, and the schemas a DROP DATABASE drops."""
    verb, second = word(words, 0), word(words, 1)
    if verb == "DROP" and second in ("DATABASE", "SCHEMA"):
        i = 2
        while word(words, i) in ("IF", "EXISTS"):
            i += 1
        return set(), ({words[i][1]} if i < len(words) and words[i][0] != "p" else set())
    if verb not in ("TRUNCATE", "DROP", "RENAME", "ALTER", "CREATE"):
        return set(), set()
    i, seen = 1, set()
    while word(words, i) in MODIFIERS:
        seen.add(word(words, i))
        i += 1
    if verb == "CREATE" and "REPLACE" not in seen:
        return set(), set()
    if verb != "TRUNCATE" and not seen & {"TABLE", "TABLES"}:
        return set(), set()                      # DROP INDEX, ALTER USER, CREATE OR REPLACE VIEW
    targets: set[tuple[str, str]] = set()
    ref, i = table_ref(words, i, default)
    if ref is not None:
        targets.add(ref)
    if verb in ("DROP", "RENAME"):               # a, b, … / a TO b, c TO d
        while i < len(words) and (words[i] == ("p", ",") or word(words, i) == "TO"):
            ref, i = table_ref(words, i + 1, default)
            if ref is not None:
                targets.add(ref)
    elif verb == "ALTER":                        # … RENAME [TO|AS] new: the new name too
        for k in range(i, len(words)):
            if word(words, k) == "RENAME" and word(words, k + 1) not in (
                    "COLUMN", "INDEX", "KEY"):
                ref, _ = table_ref(words, k + 2 if word(words, k + 1) in ("TO", "AS") else k + 1,
                              default)
                if ref is not None:
                    targets.add(ref)
    return targets, set()
