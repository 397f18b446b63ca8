"""`chainlab probe`, `chainlab matrix` and `chainlab ssh`: explore a lab without writing YAML."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from chainlab.errors import ChainlabError, InputError, Problem
from chainlab.inventory import load_inventory
from chainlab.render.console import make_console

RUNS = Path("runs")
PROTOS = "icmp, tcp:PORT or udp:PORT"


def _runs_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=RUNS,
                        show_default=True, help="Where run directories go.")(fn)


@click.command("probe")
@click.argument("source")
@click.argument("target")
@click.option("--icmp", is_flag=True, help="ICMP echo (the default).")
@click.option("--tcp", type=click.IntRange(1, 65535), metavar="PORT", help="TCP connect to PORT.")
@click.option("--udp", type=click.IntRange(1, 65535), metavar="PORT", help="A UDP datagram to PORT, answered.")
@click.option("--count", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Echo requests (icmp); datagrams (udp), sent until one is answered. A tcp probe makes one"
                   " connection.")
@_runs_option
@click.pass_obj
def probe_command(obj: object, source: str, target: str, icmp: bool, tcp: int | None, udp: int | None,
                  count: int, runs_dir: Path) -> None:
    """Probe from SOURCE to TARGET (hosts or containers; TARGET may be an address) on the
    provisioned lab: the path per node, verdicts, the rule of a drop, flows with NAT, and
    a run dir with report.html. Exit 0 if the probe got its answer, 1 if not, 3 if it could
    not be made (an error: a container stopped, a host not answering)."""
    from chainlab.commands.run import run_errors
    from chainlab.render.probe import print_probe
    from chainlab.run.explore import probe, probe_request

    if icmp + (tcp is not None) + (udp is not None) > 1:
        raise click.UsageError("give one of --icmp, --tcp PORT, --udp PORT")
    inv = load_inventory(obj.inventory_path)  # type: ignore[attr-defined]
    console = make_console()
    with run_errors(console):
        result = probe(inv, probe_request(source, target, tcp, udp, count), runs_dir, log=console.print)
    print_probe(console, result)
    sys.exit(0 if result.reached else 1)


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("expected NAME[,NAME...]")
    return names


def _proto(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int | None]:
    kind, _, port = value.partition(":")
    if kind == "icmp" and not port:
        return "icmp", None
    if kind in ("tcp", "udp") and port.isdigit() and 1 <= int(port) <= 65535:
        return kind, int(port)
    raise click.BadParameter(f"{value!r}: expected {PROTOS}")


@click.command("matrix")
@click.option("--from", "sources", callback=_names, metavar="A,B", help="Sources (default: every host and container).")
@click.option("--to", "targets", callback=_names, metavar="C,D", help="Targets (default: every host and container).")
@click.option("--proto", callback=_proto, default="icmp", show_default=True, metavar="PROTO", help=PROTOS)
@click.option("--expect", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Expected cells as a truth table ('.' reachable, 'X' unreachable); exit 1 on any difference.")
@_runs_option
@click.pass_obj
def matrix_command(obj: object, sources: list[str] | None, targets: list[str] | None, proto: tuple[str, int | None],
                   expect: Path | None, runs_dir: Path) -> None:
    """Every source × target probed at once: reachable or the rule that dropped it, as a
    table here and in matrix.html + matrix.json, each cell linked to its chain walk. A pair
    with a stopped or missing container is not probed (`?`, exit 3 unless a check failed)."""
    from chainlab.commands.run import run_errors
    from chainlab.render.probe import print_matrix
    from chainlab.run.explore import matrix

    inv = load_inventory(obj.inventory_path)  # type: ignore[attr-defined]
    console = make_console()
    with run_errors(console):
        grid = matrix(inv, runs_dir, sources, targets, proto[0], proto[1], expect, log=console.print)
    print_matrix(console, grid)
    console.print(f"matrix: {runs_dir / grid.run_dir / 'matrix.html'}")
    sys.exit(1 if grid.passed is False else 3 if grid.not_probed else 0)


@click.command("ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh_command(obj: object, host: str, command: tuple[str, ...]) -> None:
    """A shell on HOST, or COMMAND there (`chainlab ssh master -- docker ps`), with chainlab's
    key, user and known_hosts; unknown host keys are refused. Exits with ssh's status; its
    own failures (inventory, route, no client) exit 255, as OpenSSH's do, so that none passes
    for the remote command's status."""
    from chainlab.remote.openssh import SSH_FAILED, ssh_argv
    from chainlab.remote.target import resolve_target

    if command[:1] == ("--",):
        command = command[1:]
    try:
        inv = load_inventory(obj.inventory_path)  # type: ignore[attr-defined]
        if host not in inv.hosts:
            raise InputError([Problem("ssh", host, f"is not a host of the inventory ({', '.join(inv.hosts)})")])
        target = resolve_target(inv, host)
        binary = shutil.which("ssh")
        if binary is None:
            raise ChainlabError("the OpenSSH client is not installed (Debian: apt-get install openssh-client)")
    except ChainlabError as exc:
        exc.exit_code = SSH_FAILED
        raise
    if len(command) == 1 and any(c.isspace() for c in command[0]):  # `ssh host 'a; b'` as OpenSSH users type it
        click.echo(f"note: {command[0]!r} is one word: it runs as a program of that name (chainlab quotes each"
                   " word); for a shell line: -- sh -c '...'", err=True)
    sys.stdout.flush()
    os.execv(binary, ssh_argv(target, command))


COMMANDS = [probe_command, matrix_command, ssh_command]
