"""Commands' output into a pipe or a file: nothing wrapped, nothing cut (render/console.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.table import Table

from chainlab.render.console import make_console

SRC = Path(__file__).resolve().parents[2] / "src" / "chainlab"


def test_into_a_pipe_lines_and_tables_are_whole(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    console = make_console()
    path = "runs/20261205-071700-local-03-host-to-container-on-another-host-" + "x" * 60 + "/report.html"
    console.print(f"probe exit code 1; evidence in {path}")
    table = Table(title="scenario 3")
    table.add_column("node")
    table.add_column("detail")
    table.add_row("slave1", "filter:cali-tw-cali5249a203a12 rule 6: " + "-m comment --comment x " * 8)
    console.print(table)
    lines = console.file.getvalue().splitlines()
    assert lines[0].endswith(path)
    row = next(line for line in lines if "slave1" in line)
    assert "…" not in row and row.count("--comment x") == 8


def test_every_command_prints_through_make_console():
    """One rule for the layout: no command builds its own rich Console (a test's console
    writing into a buffer, in the pytest plugin, is not a command's)."""
    built = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if re.search(r"\bConsole\(", p.read_text()) and p.name not in ("console.py", "pytest_plugin.py")}
    assert built == set()
