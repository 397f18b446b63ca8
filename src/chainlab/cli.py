"""The `chainlab` command: one group, one module per sub-command under commands/."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

from chainlab.errors import ChainlabError
from chainlab.inventory import resolve_inventory_path


class Context:
    """Options shared by every sub-command."""

    def __init__(self, inventory_option: str | None):
        self.inventory_path = resolve_inventory_path(inventory_option)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-i",
    "--inventory",
    "inventory_option",
    metavar="PATH",
    help="Inventory file (default: $CHAINLAB_INVENTORY, else ./inventory.yaml).",
)
@click.version_option(package_name="chainlab")
@click.pass_context
def group(ctx: click.Context, inventory_option: str | None) -> None:
    """Prove which iptables chains a packet walks through."""
    ctx.obj = Context(inventory_option)


def _register() -> None:
    from chainlab.commands import analyze, inventory, local

    for module in (analyze, inventory, local):
        for command in module.COMMANDS:
            group.add_command(command)


def main() -> None:
    """Entry point: expected failures become one clean message and an exit code."""
    _register()
    err = Console(stderr=True, highlight=False)
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except ChainlabError as exc:
        err.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
