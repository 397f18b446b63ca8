"""`chainlab vm up|down|status|image`: the inventory's hosts as qemu VMs on this machine."""

from __future__ import annotations

import time
from datetime import datetime

import click
from rich.table import Table

from chainlab.inventory import load_inventory
from chainlab.local import link_guard
from chainlab.render.console import make_console
from chainlab.vm import lab
from chainlab.vm.image import ensure_image, manifest
from chainlab.vm.plan import VmLabPlan, plan_vm_lab


def _plan(obj: object) -> VmLabPlan:
    return plan_vm_lab(load_inventory(obj.inventory_path))  # type: ignore[attr-defined]


def _since(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    when = datetime.fromtimestamp(timestamp)
    return when.strftime("%H:%M:%S" if when.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


@click.group("vm")
def vm_group() -> None:
    """The VM lab (inventory with `provider: qemu`, e.g. -i lab/vm.yaml)."""


@vm_group.command("up")
@click.pass_obj
def up_cmd(obj: object) -> None:
    """Boot the VMs (building the image first if needed), or repair what is missing."""
    plan = _plan(obj)
    console = make_console()
    started = time.monotonic()
    lab.up(plan, console)
    console.print(f"lab {plan.lab} up in {time.monotonic() - started:.1f}s;"
                  f" ssh -F {plan.ssh_config} {next(iter(plan.hosts))}")


@vm_group.command("down")
@click.option("--force", is_flag=True, help="Also while another chainlab command (lab up/down, run, nightly, probe, matrix) holds the lab (it is interrupted).")
@click.pass_obj
def down_cmd(obj: object, force: bool) -> None:
    """Remove the VMs, their disks, taps, bridge, namespace and keys (the image stays)."""
    lab.down(_plan(obj), log=make_console().print, force=force)


@vm_group.command("status")
@click.pass_obj
def status_cmd(obj: object) -> None:
    """Show each VM: qemu, sshd, accelerator, host memory."""
    plan = _plan(obj)
    table = Table(title=f"VM lab {plan.lab}")
    for column in ("host", "address", "qemu", "pid", "sshd", "accel", "memory", "flavour", "up since"):
        table.add_column(column, no_wrap=True)
    for row in lab.status(plan):
        table.add_row(row.name, str(row.address), "[green]up[/green]" if row.running else "[red]down[/red]",
                      str(row.pid or "-"), "[green]up[/green]" if row.sshd else "[red]down[/red]",
                      row.accel or "-", f"{row.rss_mib} MiB" if row.rss_mib is not None else "-",
                      row.flavour, _since(row.up_since))
    if plan.state_file.exists():  # up: whether other users are kept off it
        table.caption = link_guard.status_line(plan.root_if)
    make_console().print(table)


@vm_group.command("image")
@click.option("--keep", is_flag=True, help="Only build it if it is not in the cache yet.")
@click.pass_obj
def image_cmd(obj: object, keep: bool) -> None:
    """(Re)build the VM image from Debian's packages (VMs booted later use it)."""
    plan = _plan(obj)
    console = make_console()
    paths = ensure_image(plan.image.dir.parent, console, rebuild=not keep)
    info = manifest(paths) or {}
    console.print(f"image {paths.dir}: Debian {info.get('suite')}, kernel {info.get('kernel')},"
                  f" {info.get('installed')} packages, built {info.get('built')} in {info.get('seconds')} s")


COMMANDS = [vm_group]
