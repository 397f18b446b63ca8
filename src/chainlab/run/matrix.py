"""A reachability matrix: every source × target, each cell reachable or why not (pure).

This module owns `matrix.json` (`Matrix.to_dict`, `load_matrix`) and the expectation
files of `chainlab matrix --expect`, a truth table as cyclonus prints one:

    # rows are sources, columns targets: "." reachable, "X" unreachable, "-" or "?" unchecked
              master  slave1  web1
    master    -       .       .
    slave1    .       -       X

The header's first word may be a label (cyclonus puts the port there); `|` and border
lines of `+`, `-` and `=` may frame the table; `#` starts a comment.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chainlab.calico.datastore import without_workload_names
from chainlab.errors import InputError, Problem
from chainlab.files import write_atomic
from chainlab.run.outcome import ProbeResult
from chainlab.rundir import is_complete

MATRIX_VERSION = 1
MATRIX_JSON = "matrix.json"
EXPECT_MARKS = {".": True, "X": False, "x": False, "-": None, "?": None}
_BORDER = re.compile(r"^[\s+\-=|]*$")


@dataclass
class Cell:
    """One source → target probe of the matrix."""

    source: str
    target: str
    reachable: bool
    decision: str  # `reachable`, or why not
    drop: dict[str, Any] | None = None  # node, direction, table, chain, step, rule of the deciding drop
    nodes: list[str] = field(default_factory=list)
    report: str | None = None  # the cell's report.html, relative to the matrix directory
    expected: bool | None = None  # from --expect (None: not checked)
    previous: str | None = None  # the previous matrix's `short` for this pair (None: none)
    probed: bool = True  # False: a container of the pair could not take part (`decision` says why)

    @property
    def ok(self) -> bool | None:
        return None if self.expected is None or not self.probed else self.expected == self.reachable

    @property
    def changed(self) -> bool:
        """Whether the previous matrix decided this pair otherwise; a workload's chain that
        only took its interface's new name (`cali-tw-cali<11 hex>`: a restarted container)
        is the same decision."""
        return (self.probed and self.previous is not None
                and without_workload_names(self.previous) != without_workload_names(self.short))

    @property
    def state(self) -> str:
        return "not probed" if not self.probed else "reachable" if self.reachable else "unreachable"

    @property
    def short(self) -> str:
        """`reachable`, the drop as `node table:chain step`, or the decision."""
        if self.reachable or self.drop is None:
            return self.decision
        d = self.drop
        return f"{d['node']} {d['table']}:{d['chain']} {d['step']}".rstrip()


@dataclass
class Matrix:
    lab: str
    service: str  # icmp, tcp/80, udp/53
    sources: list[str]
    targets: list[str]
    cells: list[Cell]
    started: str = ""
    duration_s: float = 0.0
    run_dir: str = ""
    previous: str | None = None  # the previous matrix's directory name
    #: matrices of this lab and service begun after `previous` and never finished (killed,
    #: interrupted: PARTIAL still there), so not compared with
    skipped_partial: list[str] = field(default_factory=list)
    expect_file: str | None = None
    waves: int = 1  # captures the probes needed (see attribute.plan_waves)

    def cell(self, source: str, target: str) -> Cell | None:
        return next((c for c in self.cells if c.source == source and c.target == target), None)

    @property
    def failures(self) -> list[Cell]:
        return [c for c in self.cells if c.ok is False]

    @property
    def changes(self) -> list[Cell]:
        return [c for c in self.cells if c.changed]

    @property
    def not_probed(self) -> list[Cell]:
        return [c for c in self.cells if not c.probed]

    @property
    def passed(self) -> bool | None:
        """None without expectations; else whether every checked cell is as expected."""
        return None if self.expect_file is None else not self.failures

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["version"] = MATRIX_VERSION
        for cell, out in zip(self.cells, doc["cells"]):
            out["state"], out["ok"], out["changed"] = cell.state, cell.ok, cell.changed
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Matrix:
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__ and k != "cells"}
        cells = [Cell(**{k: v for k, v in c.items() if k in Cell.__dataclass_fields__}) for c in doc["cells"]]
        return cls(cells=cells, **fields)


def deciding_rules(matrix: Matrix) -> list[dict[str, Any]]:
    """The distinct drops that decided unreachable cells, numbered from 1, with their cells."""
    out: list[dict[str, Any]] = []
    for cell in matrix.cells:
        if cell.reachable or cell.drop is None:
            continue
        entry = next((e for e in out if e["drop"] == cell.drop), None)
        if entry is None:
            entry = {"n": len(out) + 1, "drop": cell.drop, "cells": []}
            out.append(entry)
        entry["cells"].append(f"{cell.source} → {cell.target}")
    return out


def rule_number(rules: list[dict[str, Any]], cell: Cell) -> int | None:
    """The number `deciding_rules` gave the drop of an unreachable cell (None: reachable, or
    lost without a rule)."""
    if cell.reachable or cell.drop is None:
        return None
    return next((e["n"] for e in rules if e["drop"] == cell.drop), None)


def cell_of(result: ProbeResult, report: str | None = None) -> Cell:
    drop = result.drop
    return Cell(
        result.spec.request.source, result.spec.request.target, result.reached, result.decision,
        None if drop is None else {"node": drop.node, "direction": drop.direction, "table": drop.table,
                                   "chain": drop.chain, "step": drop.step, "rule": drop.rule},
        result.nodes, report,
    )


def write_matrix(directory: Path, matrix: Matrix) -> Path:
    return write_atomic(directory / MATRIX_JSON, json.dumps(matrix.to_dict(), indent=1))


def load_matrix(directory: Path) -> Matrix | None:
    """The matrix in `directory`, or None when it has none (or an unreadable one)."""
    try:
        doc = json.loads((directory / MATRIX_JSON).read_text())
        return Matrix.from_dict(doc) if doc.get("version") == MATRIX_VERSION else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def find_previous(runs_root: Path, current: Path, like: Matrix) -> tuple[Matrix | None, list[str]]:
    """The newest complete matrix under `runs_root` before `current` of the same lab,
    service, sources and targets as `like`, and the partial matrices of that lab and service
    (killed or interrupted: PARTIAL still there) begun after it, which are skipped."""
    suffix = current.name[current.name.index("-matrix-"):] if "-matrix-" in current.name else None
    try:
        names = sorted((d for d in runs_root.iterdir() if d.is_dir() and d.name < current.name
                        and d.name.startswith(f"{like.lab}-") and "-matrix-" in d.name),
                       key=lambda d: d.name, reverse=True)
    except OSError:
        return None, []
    skipped: list[str] = []
    for directory in names:
        if not is_complete(directory):
            if suffix is None or directory.name.endswith(suffix):
                skipped.append(directory.name)
            continue
        matrix = load_matrix(directory)
        if matrix is not None and (matrix.lab, matrix.service, matrix.sources, matrix.targets) == \
                (like.lab, like.service, like.sources, like.targets):
            return matrix, skipped
    return None, skipped


def compare_with(matrix: Matrix, previous: Matrix | None) -> None:
    """Note in each cell the previous matrix's decision for the same pair."""
    if previous is None:
        return
    matrix.previous = Path(previous.run_dir).name or None
    for cell in matrix.cells:
        before = previous.cell(cell.source, cell.target)
        cell.previous = before.short if before is not None else None


# --- expectations -----------------------------------------------------------------------

def _expect_rows(text: str) -> list[tuple[int, list[str]]]:
    """A truth table's rows (line number, words), without comments and borders."""
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        if not _BORDER.match(line):
            rows.append((number, line.replace("|", " ").split()))
    return rows


def expect_service(text: str) -> str | None:
    """The protocol a truth table's corner names (`ICMP`, `tcp:80`, `UDP/53`) as a matrix's
    service (`icmp`, `tcp/80`), or None (no corner, or another label)."""
    rows = _expect_rows(text)
    if len(rows) < 2 or {len(words) for _, words in rows[1:]} != {len(rows[0][1])}:
        return None
    match = re.fullmatch(r"(icmp)|(tcp|udp)[:/](\d{1,5})", rows[0][1][0].lower())
    if match is None:
        return None
    return "icmp" if match[1] else f"{match[2]}/{int(match[3])}"


def parse_expect(text: str, filename: str) -> dict[tuple[str, str], bool | None]:
    """(source, target) → expected reachability (None: not checked) from a truth table."""
    rows = _expect_rows(text)
    problems: list[Problem] = []
    if len(rows) < 2:
        raise InputError([Problem(filename, "", "expected a header of targets and a row per source", line=None)])
    (header_line, header), body = rows[0], rows[1:]
    widths = {len(words) for _, words in body}
    if widths == {len(header)}:
        header = header[1:]  # a label in the header's corner
    targets = header
    out: dict[tuple[str, str], bool | None] = {}
    for number, words in body:
        source, marks = words[0], words[1:]
        if len(marks) != len(targets):
            problems.append(Problem(filename, source, f"{len(marks)} cells, the header names {len(targets)} targets", number))
            continue
        for target, mark in zip(targets, marks):
            if mark not in EXPECT_MARKS:
                problems.append(Problem(filename, f"{source} → {target}",
                                        f"{mark!r}: expected '.' (reachable), 'X' (unreachable) or '-'/'?' (unchecked)", number))
            else:
                out[(source, target)] = EXPECT_MARKS[mark]
    if len(set(targets)) != len(targets):
        problems.append(Problem(filename, "", "a target is named twice in the header", header_line))
    if problems:
        raise InputError(problems)
    return out


def check_expect_names(expected: dict[tuple[str, str], bool | None], filename: str, known: set[str], lab: str) -> None:
    """Names in an expectation file that are no endpoint of the lab are input errors."""
    unknown = sorted({name for pair in expected for name in pair} - known)
    if unknown:
        raise InputError([Problem(filename, "", f"{', '.join(unknown)}: not a host or container of lab {lab}")])


def apply_expect(matrix: Matrix, expected: dict[tuple[str, str], bool | None], filename: str) -> None:
    """Set each probed cell's expectation (pairs the matrix did not probe are left out)."""
    matrix.expect_file = filename
    for cell in matrix.cells:
        cell.expected = expected.get((cell.source, cell.target))


def expect_text(matrix: Matrix) -> str:
    """The matrix as an expectation file (what `--expect` reads back)."""
    width = max(len(n) for n in [*matrix.sources, *matrix.targets, matrix.service]) + 2
    lines = [f"# chainlab matrix of lab {matrix.lab}, {matrix.service}: rows are sources, columns targets",
             matrix.service.ljust(width) + "".join(t.ljust(width) for t in matrix.targets).rstrip()]
    for source in matrix.sources:
        marks = []
        for target in matrix.targets:
            cell = matrix.cell(source, target)
            marks.append("-" if cell is None else "?" if not cell.probed else "." if cell.reachable else "X")
        lines.append(source.ljust(width) + "".join(m.ljust(width) for m in marks).rstrip())
    return "\n".join(lines) + "\n"
