"""`chainlab profile show|allow|reset`: Calico profiles in etcd (v1 layout).

On the local lab, the Calico dataplane is chainlab's emulation of Calico 2.x (felix-lite);
it re-renders the hosts' rules within a second of a change made here.
"""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

import click

from chainlab.calico import profiles
from chainlab.inventory import load_inventory
from chainlab.patterns import NETWORK_NAME, PATTERN_HELP
from chainlab.remote import etcd_client
from chainlab.render.console import make_console

if TYPE_CHECKING:
    import etcd


#: etcd answers a profile read in milliseconds: a stopped one is said within seconds.
READ_TIMEOUT_S = 2
RETRY_FOR_S = 4


def _client(obj: object) -> etcd.Client:
    return etcd_client(load_inventory(obj.inventory_path),  # type: ignore[attr-defined]
                       read_timeout=READ_TIMEOUT_S, retry_for=RETRY_FOR_S)


def _profile_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """NAME becomes part of etcd keys: only a network name (no '/', no '..')."""
    if not re.fullmatch(NETWORK_NAME, value):
        raise click.BadParameter(f"{value!r} is not {PATTERN_HELP[NETWORK_NAME]}")
    return value


def _cidr(ctx: click.Context, param: click.Parameter, value: str) -> IPv4Network:
    """An IPv4 network as written: host bits set (10.1.2.3/8) are refused, not widened."""
    try:
        return IPv4Network(value)
    except ValueError as exc:
        try:
            widened = IPv4Network(value, strict=False)
        except ValueError:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    address = value.split("/")[0]
    raise click.BadParameter(f"{value!r} has host bits set: write {widened} for the whole network,"
                             f" or {address}/32 for that one address")


@click.group("profile")
def profile_group() -> None:
    """Calico profiles in etcd (rules, tags, labels)."""


@profile_group.command("show")
@click.argument("name", callback=_profile_name)
@click.pass_obj
def show_cmd(obj: object, name: str) -> None:
    """Print profile NAME's rules, tags and labels as JSON."""
    click.echo(json.dumps(profiles.show(_client(obj), name), indent=2, sort_keys=True))


@profile_group.command("allow")
@click.argument("name", callback=_profile_name)
@click.option("--from", "cidr", required=True, metavar="CIDR", callback=_cidr,
              help="source network to admit inbound")
@click.pass_obj
def allow_cmd(obj: object, name: str, cidr: IPv4Network) -> None:
    """Add an inbound allow rule from CIDR to profile NAME."""
    if cidr.prefixlen == 0:
        make_console(stderr=True).print(
            f"[yellow]warning:[/yellow] {cidr} admits every source address to profile {name}")
    changed = profiles.allow_from(_client(obj), name, cidr)
    make_console().print(f"profile {name}: {'allowed' if changed else 'already allows'} {cidr}")


@profile_group.command("reset")
@click.argument("name", callback=_profile_name)
@click.pass_obj
def reset_cmd(obj: object, name: str) -> None:
    """Reset profile NAME to the network default (inbound from its tag only)."""
    changed = profiles.reset(_client(obj), name)
    make_console().print(f"profile {name}: {'reset' if changed else 'already the default'}")


COMMANDS = [profile_group]
