"""`chainlab inventory check`: validate an inventory and show the lab."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from chainlab.inventory import Inventory, load_inventory
from chainlab.render.console import make_console


def inventory_table(inv: Inventory) -> Table:
    table = Table(title=f"lab {inv.lab} ({inv.provider})")
    for column in ("host", "address", "roles", "os", "iptables", "trace backend", "containers"):
        # names and addresses must never be cut to "172.16.9…"; the rest may wrap
        table.add_column(column, no_wrap=column in ("host", "address", "os", "iptables"))
    for name, host in inv.hosts.items():
        containers = ", ".join(c for c, spec in inv.containers.items() if spec.host == name)
        table.add_row(
            name, str(host.address), ", ".join(host.roles), host.os, host.iptables,
            host.trace_backend, containers or "-",
        )
    return table


@click.group("inventory")
def inventory_group() -> None:
    """Inventory files."""


@inventory_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def check(obj: object, file: Path | None) -> None:
    """Validate FILE (default: the inventory in use) and print the lab, or the errors (exit 2)."""
    path = file or obj.inventory_path  # type: ignore[attr-defined]
    inv = load_inventory(path)
    console = make_console()
    console.print(inventory_table(inv))
    extra = []
    if inv.etcd:
        extra.append(f"etcd on {inv.etcd.host}:{inv.etcd.port}")
    extra.append(f"network {inv.calico.network} ({inv.calico.driver}, pool {inv.calico.pool})")
    extra.append(f"image {inv.image.name} ({inv.image.source})")
    console.print("; ".join(extra))
    console.print(f"[green]{path}: valid[/green]")


COMMANDS = [inventory_group]
