"""render.text.grid prints what rich's borderless Table of Text cells prints, character for
character (and escape code for escape code on a terminal), whether it lays the table out
itself or not."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chainlab.render.text import Cell, grid

STYLES = ("", "green", "bold red", "yellow")
TEXT = st.lists(st.sampled_from([*"ab Z09:-_.[]/→é日\t\x1b\u200b", "[bold]"]), max_size=30).map("".join)


def rich_table(columns: list[str], rows: list[list[Cell]], right: tuple[int, ...]) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    for i, name in enumerate(columns):
        table.add_column(Text(name), justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*(Text(c) if isinstance(c, str) else Text(c[0], style=c[1]) for c in row))
    return table


def printed(renderable: object, width: int, terminal: bool) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=terminal, color_system="standard" if terminal else None).print(renderable)
    return out.getvalue()


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[Cell]], tuple[int, ...]]:
    n = draw(st.integers(1, 5))
    columns = draw(st.lists(st.text(alphabet="abcxyz:", min_size=1, max_size=12), min_size=n, max_size=n))
    cell = st.one_of(TEXT, st.tuples(TEXT, st.sampled_from(STYLES)))
    rows = draw(st.lists(st.lists(cell, min_size=n, max_size=n), max_size=6))
    right = tuple(i for i in range(n) if draw(st.booleans()))
    return columns, rows, right


@settings(max_examples=300, deadline=None)
@given(tables(), st.sampled_from([80, 40, 200]), st.booleans())
def test_grid_prints_what_rich_prints(table, width, terminal):
    columns, rows, right = table
    assert printed(grid(columns, rows, width, right), width, terminal) == printed(rich_table(columns, rows, right),
                                                                                 width, terminal)


def test_grid_lays_out_plain_tables_itself():
    rows: list[list[Cell]] = [["PREROUTING", "raw:PREROUTING", "rule 1", ""], ["FORWARD", "filter:cali-FORWARD", "policy", "0x40000"]]
    assert isinstance(grid(["hook", "table:chain", "step", "mark"], rows, 80), Text)
    assert isinstance(grid(["hook"], [["x" * 100]], 80), Table)  # too wide: rich wraps it


def test_into_a_pipe_or_file_rows_are_not_wrapped(monkeypatch):
    """make_console(): on a terminal tables are laid out to its width (rich wraps what does
    not fit); into a pipe or a file they are laid out whole and nothing wraps."""
    import io

    from chainlab.render.console import make_console
    from chainlab.render.text import layout_width

    monkeypatch.setattr("sys.stdout", io.StringIO())
    console = make_console(emoji=False)
    assert not console.is_terminal and console.soft_wrap and layout_width(console) is None
    row = [["PREROUTING", "filter:cali-fw-" + "x" * 120, "rule 1", "0x40000"]]
    laid_out = grid(["hook", "table:chain", "step", "mark"], row, layout_width(console))
    assert isinstance(laid_out, Text)
    console.print(laid_out)
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("PREROUTING  filter:cali-fw-xxx") and len(lines[1]) > 140

    terminal = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    terminal.soft_wrap = False
    assert layout_width(terminal) == 80
    terminal.print(grid(["hook", "table:chain", "step", "mark"], row, layout_width(terminal)))
    assert all(len(line) <= 80 for line in terminal.file.getvalue().splitlines())


def test_into_a_pipe_a_table_rich_lays_out_is_not_cut(monkeypatch):
    """A row with a cell rich must lay out (here a rule text ending in a space, as nft prints
    some) goes to rich's Table; into a pipe it is laid out whole too (rich fitted it to 80
    columns, cutting chain names with an ellipsis)."""
    import io

    from chainlab.render.console import make_console
    from chainlab.render.text import layout_width

    monkeypatch.setattr("sys.stdout", io.StringIO())
    console = make_console(emoji=False)
    row = [["INPUT", "filter:KUBE-POD-FW-USM7NRBIRGTUOWVB", "rule → JUMP KUBE-NWPLCY-COMMON",
            "counter packets 25 bytes 2564 jump KUBE-NWPLCY-COMMON "],
           ["INPUT", "filter:INPUT", "rule 3", 'comment "允许内网访问允许内网访问允许内网访问允许内网访问允许内网访问允许内网访问" accept']]  # two cells per character
    laid_out = grid(["hook", "table:chain", "step", "rule"], row, layout_width(console))
    assert isinstance(laid_out, Table)
    console.print(laid_out)
    printed = console.file.getvalue().splitlines()
    assert len(printed) == 3 and "…" not in printed[1] and "KUBE-POD-FW-USM7NRBIRGTUOWVB" in printed[1]
    assert "jump KUBE-NWPLCY-COMMON" in printed[1] and printed[2].rstrip().endswith('允许内网访问" accept')
