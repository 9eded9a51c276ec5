"""The warehouse's column markers: which form a column's values are in (clear or HMAC) and
which incarnation of the column it is (a generation), kept in the column's description so that
every tenant can tell, without shared state, whether its slice was filled into the column as it
is now. Pure: resources.warehouse_dest reads and writes the descriptions.
"""

import re
import uuid

from hakobu.bqschema import LiveColumn
from hakobu.state import Watermark

LEGACY_GEN = "legacy00"       # columns made before markers existed, adopted as they are
_MARKER = re.compile(r"hakobu form=(clear|hmac) gen=([0-9a-z]{8})")


def marker(form: str, gen: str) -> str:
    """A warehouse column's description: readable for analysts, parsed by parse_marker."""
    what = ("HMAC-SHA256 of the source value as 64 hex characters (hash_columns)"
            if form == "hmac" else "the source value")
    return f"hakobu form={form} gen={gen}: {what}"


def parse_marker(description: str | None) -> tuple[str, str] | None:
    m = _MARKER.search(description or "")
    return (m.group(1), m.group(2)) if m else None


def new_gen() -> str:
    return uuid.uuid4().hex[:8]


def column_forms(live: dict[str, LiveColumn], forms: dict[str, str]
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """Pure: the delivered columns whose marker says the other form → "hashed" / "unhashed"
    (their values must go, for every tenant), and the ones without a marker → wanted form."""
    reform, unmarked = {}, {}
    for name, want in forms.items():
        col = live.get(name.lower())
        if col is None:
            continue
        m = parse_marker(col.description)
        if m is None:
            unmarked[col.name] = want
        elif m[0] != want:
            reform[col.name] = "hashed" if want == "hmac" else "unhashed"
    return reform, unmarked


def needs_refill(previous: Watermark | None, gens: dict[str, str], changed: list[str]
                 ) -> str | None:
    """Pure: why this tenant's slice must be read again in full (None: it need not).

    The warehouse watermark records the generation of every column the slice was filled into.
    A column created again since (by this run or by another tenant's run: newly hashed, back
    from drop_columns, or added) holds nothing of this slice, so the slice is re-read; so is
    one the slice never had (a column this tenant excluded before). A watermark written before
    generations existed matches the columns adopted from then (LEGACY_GEN). No watermark: the
    next read is a first load anyway.
    """
    if previous is None:
        return None
    if changed:
        return "columns created again by this run: " + ", ".join(changed)
    record = previous.columns
    if record is None:
        stale = [c for c, g in gens.items() if g != LEGACY_GEN]
    else:
        stale = [c for c, g in gens.items() if record.get(c) != g]
    return ("columns this slice was not filled into: " + ", ".join(stale)) if stale else None

