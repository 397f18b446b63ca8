"""`chainlab local up|down|status`: the three-host lab built from namespaces on this machine."""

from __future__ import annotations

import time
from datetime import datetime

import click
from rich.table import Table

from chainlab.inventory import load_inventory
from chainlab.local import down, link_guard, plan_lab, status, up
from chainlab.local.plan import LabPlan
from chainlab.render.console import make_console


def _plan(obj: object) -> LabPlan:
    return plan_lab(load_inventory(obj.inventory_path))  # type: ignore[attr-defined]


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("[green]up[/green]" if value else "[red]down[/red]")


def _since(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    when = datetime.fromtimestamp(timestamp)
    return when.strftime("%H:%M:%S" if when.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


@click.group("local")
def local_group() -> None:
    """The local lab (inventory with `provider: local`, e.g. -i lab/local.yaml)."""


@local_group.command("up")
@click.pass_obj
def up_cmd(obj: object) -> None:
    """Build the lab, or repair whatever part of it is missing (idempotent)."""
    plan = _plan(obj)
    console = make_console()
    started = time.monotonic()
    up(plan, log=console.print)
    console.print(f"lab {plan.lab} up in {time.monotonic() - started:.1f}s;"
                  f" ssh -F {plan.ssh_config} {next(iter(plan.hosts))}")


@local_group.command("down")
@click.option("--force", is_flag=True, help="Also while another chainlab command (lab up/down, run, nightly, probe, matrix) holds the lab (it is interrupted).")
@click.pass_obj
def down_cmd(obj: object, force: bool) -> None:
    """Remove every namespace, link, mount, process and file the lab made."""
    down(_plan(obj), log=make_console().print, force=force)


@local_group.command("status")
@click.pass_obj
def status_cmd(obj: object) -> None:
    """Show each host and its daemons."""
    plan = _plan(obj)
    table = Table(title=f"local lab {plan.lab}")
    for column in ("host", "address", "sshd", "dockerd", "etcd", "flavour", "up since"):
        table.add_column(column, no_wrap=True)
    for row in status(plan):
        since = _since(row.up_since)
        table.add_row(row.name, str(row.address), *(_mark(row.daemons[d]) for d in ("sshd", "dockerd", "etcd")),
                      row.flavour, since)
    if plan.state_file.exists():  # up: whether other users are kept off it
        table.caption = link_guard.status_line(plan.root_if)
    make_console().print(table)


COMMANDS = [local_group]
