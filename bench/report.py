"""Figures, their targets, the one table ``make bench`` prints, and the machine they were measured on.

A figure is a value with the baseline it was measured against in the same run, and the ratio of
the two. A target bounds either the ratio or the value itself (push overhead is a number of
milliseconds, not a ratio); ``make bench-check`` fails when any target is missed. A figure that
could not be measured (its code does not exist yet, a binary is missing) is *pending*, with the
reason, and is neither a pass nor a failure.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_BEGIN = "<!-- bench:results:begin -->"
RESULTS_END = "<!-- bench:results:end -->"


@dataclass(frozen=True)
class Target:
    """``subject`` (``"ratio"`` or ``"value"``) must be at most (``"<="``) or at least (``">="``) ``bound``."""

    subject: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        if self.subject not in ("ratio", "value") or self.op not in ("<=", ">="):
            raise ValueError(f"unsupported target {self.subject} {self.op} {self.bound}")

    def holds(self, figure: Figure) -> bool | None:
        """Whether ``figure`` meets the target; None when the figure has no such number."""
        number = figure.ratio if self.subject == "ratio" else figure.value
        if number is None or (isinstance(number, float) and number != number):
            return None
        return number <= self.bound if self.op == "<=" else number >= self.bound

    def describe(self) -> str:
        return f"{'ratio' if self.subject == 'ratio' else 'value'} {self.op} {self.bound:g}"


@dataclass
class Figure:
    """One row of the table: ``value`` against ``baseline`` (same unit), ``ratio`` = value / baseline
    unless the benchmark defines it otherwise (it says so in ``note``)."""

    key: str
    title: str
    unit: str = ""
    value: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: Target | None = None
    runs: int = 0
    note: str = ""
    pending: str | None = None

    @classmethod
    def waiting(cls, key: str, title: str, reason: str, target: Target | None = None) -> Figure:
        return cls(key=key, title=title, target=target, pending=reason)

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL``, ``pending`` or ``-`` (no target)."""
        if self.pending:
            return "pending"
        if self.target is None:
            return "-"
        held = self.target.holds(self)
        return "pending" if held is None else ("pass" if held else "FAIL")


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100_000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 0.1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def table_rows(figures: Sequence[Figure]) -> list[list[str]]:
    rows = [["figure", "value", "baseline", "ratio", "target", "verdict", "runs"]]
    for f in figures:
        if f.pending:
            rows.append([f.title, "-", "-", "-", f.target.describe() if f.target else "-", "pending", "-"])
            continue
        baseline = _number(f.baseline, f.unit)
        if f.baseline_name and f.baseline is not None:
            baseline = f"{baseline} ({f.baseline_name})"
        rows.append(
            [
                f.title,
                _number(f.value, f.unit),
                baseline,
                "-" if f.ratio is None else f"{f.ratio:.2f}x",
                f.target.describe() if f.target else "-",
                f.verdict,
                str(f.runs) if f.runs else "-",
            ]
        )
    return rows


def render_text(figures: Sequence[Figure]) -> str:
    """The table as aligned plain text, followed by the notes and pending reasons."""
    rows = table_rows(figures)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"- {f.title}: {f.pending or f.note}" for f in figures if f.pending or f.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def render_markdown(figures: Sequence[Figure]) -> str:
    rows = table_rows(figures)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    notes = [f"- **{f.title}**: {f.pending or f.note}" for f in figures if f.pending or f.note]
    return "\n".join(out + ([""] + notes if notes else []))


def failures(figures: Iterable[Figure]) -> list[Figure]:
    return [f for f in figures if f.verdict == "FAIL"]


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or "unknown")


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine_info(root: Path) -> dict[str, str]:
    """What the figures depend on besides the code: CPUs, interpreter, load, date, commit."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(usable),
        "cpu": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(terse=True),
        "load_average_at_start": load,
        "commit": _git_commit(root),
    }


def render_machine(info: dict[str, str]) -> str:
    return "\n".join(f"- {k.replace('_', ' ')}: {v}" for k, v in info.items())


# --------------------------------------------------------------------------- persisting


def to_json(figures: Sequence[Figure], info: dict[str, str]) -> str:
    return json.dumps({"machine": info, "figures": [asdict(f) for f in figures]}, indent=2)


def record(path: Path, figures: Sequence[Figure], info: dict[str, str]) -> None:
    """Replace the results section of ``path`` (between the bench markers) with this run.

    The rest of the file -- the analysis written by people -- is left as it is. Raises
    ValueError when the markers are missing.
    """
    text = path.read_text()
    start, end = text.find(RESULTS_BEGIN), text.find(RESULTS_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {RESULTS_BEGIN} ... {RESULTS_END} section")
    section = f"{RESULTS_BEGIN}\n{render_machine(info)}\n\n{render_markdown(figures)}\n"
    path.write_text(text[:start] + section + text[end:])
