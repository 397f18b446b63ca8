"""`matrix.html`: the reachability matrix of one `chainlab matrix` run (self-contained, no scripts)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chainlab.files import write_atomic
from chainlab.report.html import environment
from chainlab.run.matrix import Matrix, deciding_rules, rule_number


def matrix_context(matrix: Matrix) -> dict[str, Any]:
    rules = deciding_rules(matrix)
    rows = []
    for source in matrix.sources:
        cells = []
        for target in matrix.targets:
            cell = matrix.cell(source, target)
            note = rule_number(rules, cell) if cell is not None else None
            cells.append({"target": target, "cell": cell, "note": note})
        rows.append({"source": source, "cells": cells})
    reachable = sum(c.reachable for c in matrix.cells)
    return {
        "m": matrix, "rows": rows, "rules": rules, "reachable": reachable, "total": len(matrix.cells),
        "changes": matrix.changes, "failures": matrix.failures,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render_matrix_report(directory: Path, matrix: Matrix) -> Path:
    """Write `directory/matrix.html`; return its path."""
    page = environment().get_template("matrix.html.j2").render(matrix_context(matrix))
    return write_atomic(directory / "matrix.html", page)
