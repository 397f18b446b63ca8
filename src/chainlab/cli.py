"""The `chainlab` command: one group, one module per sub-command under commands/."""

from __future__ import annotations

import importlib
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


#: Sub-command name → module under chainlab.commands that defines it (in COMMANDS).
#: Modules are imported only when their command runs: `analyze` then stays light.
COMMAND_MODULES = {
    "analyze": "analyze",
    "facts": "lab",
    "inventory": "inventory",
    "lab": "lab",
    "local": "local",
    "nightly": "run",
    "profile": "profile",
    "run": "run",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"chainlab.commands.{module_name}")
        return next((c for c in module.COMMANDS if c.name == cmd_name), None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    """Entry point: expected failures become one clean message and an exit code."""
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
