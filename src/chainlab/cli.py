"""The `chainlab` command: one group, one module per sub-command under commands/."""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import click

from chainlab.errors import ChainlabError, NoLabState, OutputError, visible

if TYPE_CHECKING:
    from rich.console import Console


class Context:
    """Options shared by every sub-command."""

    def __init__(self, inventory_option: str | None):
        self.inventory_option = inventory_option

    @property
    def inventory_path(self) -> Path:
        # chainlab.inventory imports pydantic (0.1 s): only for commands that read an inventory.
        from chainlab.inventory import resolve_inventory_path

        return resolve_inventory_path(self.inventory_option)


#: Sub-command name → module under chainlab.commands that defines it (in COMMANDS).
#: Modules are imported only when their command runs: `analyze` then stays light.
COMMAND_MODULES = {
    "analyze": "analyze",
    "facts": "lab",
    "inventory": "inventory",
    "lab": "lab",
    "local": "local",
    "matrix": "explore",
    "nightly": "run",
    "probe": "explore",
    "profile": "profile",
    "run": "run",
    "ssh": "explore",
    "vm": "vm",
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


#: Exit code when stdout's reader goes away early (`chainlab analyze ... | head -1`):
#: what a shell reports for a program killed by SIGPIPE. The command did not finish, so
#: 0 or 1 would lie (to `analyze --expect`, they mean "the paths match" and "differ").
EXIT_STDOUT_CLOSED = 128 + signal.SIGPIPE


class _GuardedStdout:
    """sys.stdout (or its binary buffer), except that a failed write raises OutputError."""

    def __init__(self, stream: Any):
        self._stream = stream

    @property
    def buffer(self) -> _GuardedStdout:
        return _GuardedStdout(self._stream.buffer)

    def write(self, text: Any) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise OutputError(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputError(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _no_collections_at_exit() -> None:
    """The last exit handler (registered first): no garbage collection from here on. The
    interpreter's teardown otherwise walks every object the imports made (pydantic's schemas,
    rich, paramiko), again and again: ~0.07 s of a 0.55 s warm `lab up`. Everything is written
    and closed by then; what is left is freed without them, and the process ends."""
    gc.disable()
    gc.freeze()


def main() -> None:
    """Entry point: expected failures become one clean message and an exit code.

    A closed stdout ends the command quietly with EXIT_STDOUT_CLOSED (141); a stdout that
    cannot be written otherwise with one line on stderr and exit 1.
    """
    atexit.unregister(_no_collections_at_exit)  # once, however often main() runs in a process
    atexit.register(_no_collections_at_exit)
    sys.stdout = cast(TextIO, _GuardedStdout(sys.stdout))
    try:
        code = _run()
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is exit 120
    except OutputError as exc:
        _drop_stdout()
        if exc.closed:
            code = EXIT_STDOUT_CLOSED
        else:
            print(f"error: cannot write the output: {exc}", file=sys.stderr)
            code = 1
    sys.exit(code)


def _drop_stdout() -> None:
    """Whatever is still buffered for stdout goes nowhere, so the exit-time flush succeeds."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _inventory_defaulted() -> bool:
    """Whether this command line's inventory came from neither -i nor $CHAINLAB_INVENTORY
    (then it is ./inventory.yaml)."""
    from chainlab.inventory import INVENTORY_ENV

    with group.make_context("chainlab", sys.argv[1:], resilient_parsing=True) as ctx:
        return not (ctx.params.get("inventory_option") or os.environ.get(INVENTORY_ENV))


def _stderr() -> Console:
    """A rich console on stderr, for the messages a command ends with (rich is imported only
    then: ~20 ms that a successful `analyze --format json` does without)."""
    from chainlab.render.console import make_console

    return make_console(stderr=True)


def _run() -> int | str | None:
    """Run the command line; the exit status (as for sys.exit) it ends with."""
    try:
        code = group.main(standalone_mode=False)  # ctx.exit(N) and --help come back as N
    except SystemExit as exc:  # e.g. `analyze --expect` failing: stdout is flushed first
        return exc.code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort as exc:
        cause = exc.__cause__
        signum = getattr(cause, "signum", None)  # chainlab.run.deadline.Interrupted
        if isinstance(signum, int):
            if getattr(cause, "run_dir", None) is None:  # a runner has said it already, with its run dir
                _stderr().print(f"interrupted by {signal.Signals(signum).name}")
            return 128 + signum
        _stderr().print("aborted")
        return 130
    except ChainlabError as exc:
        from rich.markup import escape

        err = _stderr()
        # control characters from an input or a remote answer as escapes (its lines kept)
        shown = "\n".join(visible(line) for line in str(exc).split("\n"))
        err.print("[red]error:[/red]", escape(shown), soft_wrap=True)
        if isinstance(exc, NoLabState) and _inventory_defaulted():
            err.print("(no -i given: the inventory is ./inventory.yaml; for the local lab use "
                      "-i lab/local.yaml or CHAINLAB_INVENTORY=lab/local.yaml)", soft_wrap=True)
        return exc.exit_code
    return code if isinstance(code, int) else 0
