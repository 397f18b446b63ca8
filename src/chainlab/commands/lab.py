"""`chainlab lab up|down` (make lab-up / lab-down) and `chainlab facts`."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from chainlab.errors import ChainlabError
from chainlab.files import check_output_file
from chainlab.inventory import Inventory, load_inventory
from chainlab.providers import provider_class
from chainlab.provision import Facts, assumed_facts, gather_facts, provision
from chainlab.provision.runner import select_hosts
from chainlab.provision.dockerview import SOCKET as DOCKER_SOCKET
from chainlab.remote.session import HostSession
from chainlab.render.console import make_console


class _Failed(ChainlabError):
    """The recap already said what failed: only the exit code remains."""

    def __str__(self) -> str:
        return "some hosts failed (see the recap)"


def _inventory(obj: object) -> Inventory:
    return load_inventory(obj.inventory_path)  # type: ignore[attr-defined]


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--timeout", "step_timeout", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
                      help="Give up on a host whose step has not finished after SECONDS (default: 300;"
                           " 900-1800 for steps that install or build).")(fn)
    fn = click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
                      help="Also write the recap and every step as JSON to FILE.")(fn)
    fn = click.option("--limit", multiple=True, metavar="HOST", help="Only this host (repeatable).")(fn)
    fn = click.option("--offline", is_flag=True,
                      help="With --check: do not connect, assume facts from the inventory's hints"
                           " (always so for provider ssh).")(fn)
    fn = click.option("--check", is_flag=True,
                      help="Print what would change and the exact commands; change nothing.")(fn)
    return fn


def _run(obj: object, action: str, check: bool, offline: bool, limit: tuple[str, ...],
         json_path: Path | None, step_timeout: float | None) -> None:
    inv = _inventory(obj)
    if offline and not check:
        raise click.UsageError("--offline only goes with --check")
    if json_path is not None:
        check_output_file(json_path)  # before the hosts are touched, not after
    # Hosts chainlab did not build are never contacted by --check: the plan comes from hints.
    offline = check and (offline or not provider_class(inv.provider).check_connects)
    report = provision(inv, action, check=check, offline=offline, limit=limit,
                       json_path=json_path, console=make_console(), step_timeout=step_timeout)
    if report.failed:
        raise _Failed()


@click.group("lab")
def lab_group() -> None:
    """Provision the inventory's hosts over SSH (make lab-up / lab-down)."""


@lab_group.command("up")
@_options
@click.pass_obj
def up_cmd(obj: object, check: bool, offline: bool, limit: tuple[str, ...], json_path: Path | None,
           step_timeout: float | None) -> None:
    """ip_forward, trace log, raw TRACE rules, image, Calico, containers; idempotent."""
    _run(obj, "up", check, offline, limit, json_path, step_timeout)


@lab_group.command("down")
@_options
@click.pass_obj
def down_cmd(obj: object, check: bool, offline: bool, limit: tuple[str, ...], json_path: Path | None,
             step_timeout: float | None) -> None:
    """Remove exactly what lab up added; re-runnable, tolerant of half-provisioned hosts."""
    _run(obj, "down", check, offline, limit, json_path, step_timeout)


def _facts_of(inv: Inventory, host: str, assumed: bool) -> Facts | str:
    if assumed:
        return assumed_facts(inv, host)
    try:
        with HostSession(inv, host, forward_to=DOCKER_SOCKET) as ssh:  # the master lab up keeps, forward included
            return gather_facts(inv, host, ssh)[0]
    except Exception as exc:
        return f"unreachable: {exc}"


@click.command("facts")
@click.option("--limit", multiple=True, metavar="HOST", help="Only this host (repeatable).")
@click.option("--assumed", is_flag=True, help="Do not connect: facts assumed from the inventory's hints.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def facts_cmd(obj: object, limit: tuple[str, ...], assumed: bool, as_json: bool) -> None:
    """What each host is (OS, init, iptables backend, kernel log, tools, etcd), gathered over SSH."""
    inv = _inventory(obj)
    hosts = select_hosts(inv, limit)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        results = dict(zip(hosts, pool.map(lambda h: _facts_of(inv, h, assumed), hosts)))
    if as_json:
        click.echo(json.dumps({h: (f.as_dict() if isinstance(f, Facts) else {"error": f})
                               for h, f in results.items()}, indent=1))
    else:
        table = Table(title=f"facts of lab {inv.lab}" + (" (assumed, not gathered)" if assumed else ""))
        table.add_column("fact", no_wrap=True)
        for host in hosts:
            table.add_column(host)
        rows = ["os_name", "family", "kernel", "init", "iptables", "kernel_log", "trace_backend", "docker",
                "rsyslogd", "ulogd", "xtables-monitor", "ip_forward", "nf_log_ipv4", "etcd", "calico"]
        for row in rows:
            cells = []
            for host in hosts:
                f = results[host]
                if not isinstance(f, Facts):
                    cells.append("[red]" + escape(f) + "[/red]" if row == "os_name" else "")
                elif row in f.tools:
                    cells.append("yes" if f.tools[row] else "no")
                else:
                    cells.append(escape(str(f.as_dict().get(row, ""))))
            table.add_row(row, *cells)
        make_console().print(table)
    if any(not isinstance(f, Facts) for f in results.values()):
        raise _Failed()


COMMANDS = [lab_group, facts_cmd]
