"""Quoting for identifiers and rendering of literal values into MySQL and BigQuery SQL.

Identifiers from config are always quoted here, never pasted. Literal values (watermarks, bounds)
are rendered from typed Python values only — connectorx takes no bound parameters, so every
reader runs the same fully rendered, injection-safe SQL text.
"""

import datetime as dt
from decimal import Decimal


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks, with embedded backticks doubled."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_bq(*parts: str) -> str:
    """A BigQuery path such as `project.dataset.table`, each part validated then quoted."""
    for p in parts:
        if not p or "`" in p or "\\" in p or "\n" in p:
            raise ValueError(f"invalid BigQuery identifier {p!r}")
    return "`" + ".".join(parts) + "`"


_BQ_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def bq_string(text: str) -> str:
    """A BigQuery string literal holding `text` exactly: backslashes, quotes and line breaks
    escaped, other control characters as \\xHH (everything else is UTF-8, as BigQuery reads
    query texts)."""
    if "\x00" in text:
        raise ValueError(f"a NUL cannot be written in a BigQuery string literal: {text!r}")
    out = []
    for ch in text:
        if ch in _BQ_ESCAPES:
            out.append(_BQ_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def mysql_literal(value) -> str:
    """Render a typed Python value as a MySQL literal. Strings go as hex, so nothing in them
    can end the literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot render {value!r}")
        return format(value, "f")
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, dt.datetime):
        return "'" + value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") + "'"
    if isinstance(value, dt.date):
        return "'" + value.isoformat() + "'"
    if isinstance(value, str):
        return "_utf8mb4 X'" + value.encode("utf-8").hex() + "'" if value else "''"
    if isinstance(value, (bytes, bytearray)):
        return "X'" + bytes(value).hex() + "'" if value else "''"
    raise TypeError(f"no MySQL literal for {type(value).__name__}")
