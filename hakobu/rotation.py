"""The content rotation (pure): which buckets a night verifies, and what was verified when.

Content digests read whole rows, so a night verifies only a slice: bucket b is compared on the
nights where b ≡ night + offset (mod verify_every). Range buckets are read as primary-key
ranges; hash-bucketed tables cannot read a slice of buckets without reading every row, so they
are verified whole on one night in `verify_every` (the offset spreads a tenant's tables over the
nights). The state (`VerifyNote`) is kept by the destination beside the watermark.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass

from hakobu.bucketing import Bucketing


def table_offset(tenant: str, table: str, n: int) -> int:
    """A stable offset per tenant and table, so a tenant's tables do not all verify their
    whole-table (hash-bucketed) pass on the same night."""
    h = hashlib.sha256(f"{tenant}\0{table}".encode()).digest()
    return int.from_bytes(h[:4], "big") % max(1, n)


def night_number(now: dt.datetime | None = None) -> int:
    """The night a run belongs to: the UTC date's ordinal (a run at 02:00 and one at 23:00
    of the same UTC day verify the same slice)."""
    return (now or dt.datetime.now(dt.timezone.utc)).date().toordinal()


def night_slice(b: Bucketing, buckets: set[int], n: int, night: int, offset: int
                ) -> tuple[list[int], str]:
    """Pure: which buckets tonight's content pass compares, and a description."""
    n = max(1, int(n))
    r = (night + offset) % n
    if n == 1:
        return sorted(buckets), "all buckets (verify_every 1)"
    if b.ranged:
        return sorted(x for x in buckets if x % n == r), f"buckets ≡ {r} mod {n}"
    if b.mode == "hash":
        if r == 0:
            return sorted(buckets), f"all buckets (hash-bucketed: whole table 1 night in {n})"
        return [], f"none tonight (hash-bucketed: whole table on night ≡ {offset % n} mod {n})"
    return [], "none (no key to bucket by)"


@dataclass(frozen=True)
class VerifyNote:
    """Which slices of a table's content were verified on which night (kept in the destination's
    state table beside the watermark). A rotation restarts when verify_every or the bucketing
    changes (the slices would mean other buckets)."""

    every: int
    bucketing: str
    slices: dict                      # slice number (str) → ISO date it was last verified

    @classmethod
    def from_dict(cls, data: dict | None) -> "VerifyNote | None":
        if not data:
            return None
        return cls(int(data.get("every", 0)), str(data.get("bucketing", "")),
                   dict(data.get("slices", {})))

    def to_dict(self) -> dict:
        return {"every": self.every, "bucketing": self.bucketing, "slices": self.slices}

    def verified_tonight(self, every: int, bucketing: str, r: int, night: int) -> bool:
        return (self.every == every and self.bucketing == bucketing
                and self.slices.get(str(r)) == dt.date.fromordinal(night).isoformat())

    @property
    def full_pass(self) -> tuple[str, str] | None:
        """(first, last) night of the latest complete pass: every bucket was compared between
        those dates. None while a rotation is incomplete."""
        if self.every < 1 or len(self.slices) < self.every:
            return None
        dates = sorted(self.slices.values())
        return dates[0], dates[-1]

    def describe(self) -> str:
        fp = self.full_pass
        if fp is None:
            return (f"content rotation: {len(self.slices)} of {self.every} slices verified, no "
                    "full pass yet")
        return f"last full content pass: every bucket compared between {fp[0]} and {fp[1]}"

    def metadata(self) -> dict:
        fp = self.full_pass
        return {"content_verify_every": self.every,
                "content_slices_verified": len(self.slices),
                "content_full_pass_completed": fp[1] if fp else "-",
                "content_full_pass_since": fp[0] if fp else "-"}


def next_note(prev: "VerifyNote | None", every: int, bucketing: str, r: int, night: int,
              whole: bool) -> VerifyNote:
    """Pure: the note after slice r (or the whole table) was verified on `night`."""
    today = dt.date.fromordinal(night).isoformat()
    slices = {} if prev is None or prev.every != every or prev.bucketing != bucketing \
        else dict(prev.slices)
    if whole:
        slices = {str(i): today for i in range(every)}
    else:
        slices[str(r)] = today
    return VerifyNote(every, bucketing, slices)


def slice_number(night: int, offset: int, every: int) -> int:
    return (night + offset) % max(1, every)
