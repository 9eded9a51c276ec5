"""Goal lines and BENCHMARKS.md: pure formatting, no measuring (tested without a database)."""

import datetime as dt
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

ANALYSIS = Path(__file__).with_name("analysis.md")   # hand-written, appended in full mode
GOAL_LINE = re.compile(r"^GOAL (?P<name>[a-z0-9-]+) measured=(?P<measured>\S+) "
                       r"target=(?P<target>\S+) (?P<verdict>PASS|MISS)(?: .*)?$")


@dataclass
class Goal:
    """One goal of issue 4: a measured value against a target (`<=` or `>=`)."""

    name: str
    measured: float | None          # None: not measured (the verdict is MISS)
    op: str                         # ">=" or "<="
    target: float
    unit: str = ""                  # "x", "MiB", "s" ... shown after the number
    note: str = ""                  # why, how, what it means: one line

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured >= self.target if self.op == ">=" else self.measured <= self.target

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if abs(value) >= 100:
            text = f"{value:.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}"
        else:
            text = f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
        return text + self.unit

    def line(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        tail = f" ({self.note})" if self.measured is None and self.note else ""
        return (f"GOAL {self.name} measured={self.fmt(self.measured)} "
                f"target={self.op}{self.fmt(self.target)} {verdict}{tail}")


@dataclass
class Report:
    """Everything one run produced: goals, informative figures, tables of raw numbers."""

    mode: str                                            # "full" or "quick"
    machine: dict = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)   # (name, value) reported, no target
    sections: list[tuple[str, str]] = field(default_factory=list)  # (title, markdown body)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    seconds: float = 0.0

    def fact(self, name: str, value: str) -> None:
        self.facts.append((name, value))

    def section(self, title: str, body: str) -> None:
        self.sections.append((title, body.strip() + "\n"))


def machine_info(server=None) -> dict:
    """nproc, memory, CPU, MariaDB version and buffer pool: the machine the figures belong to."""
    info = {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
        info["memory"] = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        info["memory"] = "unknown"
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", cpu)
        info["cpu"] = m.group(1).strip() if m else "unknown"
    except OSError:
        info["cpu"] = "unknown"
    for mod in ("connectorx", "pyarrow", "pandas", "pymysql", "sqlalchemy"):
        try:
            from importlib.metadata import version

            info[mod] = version(mod)
        except Exception:
            info[mod] = "?"
    if server is not None:
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_method")
                ver, pool, flush = cur.fetchone()
        finally:
            conn.close()
        info["mariadb"] = ver
        info["buffer_pool"] = f"{int(pool) / 1024 / 1024:.0f} MiB"
        info["flush_method"] = flush
    return info


def render(report: Report) -> str:
    m = report.machine
    when = report.started.strftime("%Y-%m-%d %H:%M UTC")
    out = ["# hakobu benchmarks", "",
           f"Latest `make bench` ({report.mode} mode), {when}, {report.seconds / 60:.1f} min. "
           "Written by `bench/run_all.py`: do not edit by hand; the method and the analysis are "
           "in the sections below the figures.", "",
           "## Machine", "",
           f"- {m.get('nproc', '?')} cores ({m.get('cpu', '?')}), {m.get('memory', '?')} memory, "
           f"{m.get('platform', '?')}",
           f"- MariaDB {m.get('mariadb', '?')}, InnoDB buffer pool {m.get('buffer_pool', '?')}, "
           f"flush method {m.get('flush_method', '?')} (reads that miss the pool are real IO)",
           f"- Python {m.get('python', '?')}, connectorx {m.get('connectorx', '?')}, "
           f"pyarrow {m.get('pyarrow', '?')}, pandas {m.get('pandas', '?')}, "
           f"PyMySQL {m.get('pymysql', '?')}, SQLAlchemy {m.get('sqlalchemy', '?')}",
           "- The server and both cores are shared with other work: absolute numbers are noisy; "
           "each goal is a ratio of two measurements taken in the same run.", "",
           "## Goals (issue 4)", "",
           "| goal | measured | target | verdict | note |",
           "|---|---|---|---|---|"]
    for g in report.goals:
        out.append(f"| `{g.name}` | {g.fmt(g.measured)} | {g.op} {g.fmt(g.target)} | "
                   f"{'PASS' if g.passed else '**MISS**'} | {g.note} |")
    out += ["", "```"] + [g.line() for g in report.goals] + ["```", ""]
    if report.facts:
        out += ["## Reported figures (no target)", "", "| figure | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in report.facts]
        out.append("")
    for title, body in sorted(report.sections, key=lambda sec: sec[0]):
        out += [f"## {title}", "", body]
    if ANALYSIS.exists() and report.mode == "full":
        out += [ANALYSIS.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(out).rstrip() + "\n"


def write(report: Report, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(path)
    return path


def to_json(report: Report) -> str:
    data = {"mode": report.mode, "machine": report.machine, "started": report.started.isoformat(),
            "seconds": report.seconds, "facts": report.facts, "sections": report.sections,
            "goals": [{"name": g.name, "measured": g.measured, "op": g.op, "target": g.target,
                       "unit": g.unit, "note": g.note} for g in report.goals]}
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def from_json(text: str) -> Report:
    data = json.loads(text)
    return Report(mode=data["mode"], machine=data["machine"],
                  goals=[Goal(**g) for g in data["goals"]],
                  facts=[tuple(f) for f in data["facts"]],
                  sections=[tuple(x) for x in data["sections"]],
                  started=dt.datetime.fromisoformat(data["started"]), seconds=data["seconds"])


def parse_goal_lines(text: str) -> list[dict]:
    """The GOAL lines of a run's output, as dicts (used by the smoke test and by humans)."""
    return [m.groupdict() for m in map(GOAL_LINE.match, text.splitlines()) if m]
