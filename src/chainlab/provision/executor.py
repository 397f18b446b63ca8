"""Runs a step: every action it yields is recorded and, unless --check, carried out.

Status: `changed` if the step yielded any action, `ok` if not, `skipped` if it raised
`Skip`, `failed` on any other exception. Under --check the step's actions are its plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from chainlab.provision.actions import Action, Outcome, Step
from chainlab.provision.recap import StepResult


class Skip(Exception):
    """Raised by a step that does not apply: the step is reported `skipped` with the reason."""


class Performer(Protocol):
    @property
    def check(self) -> bool: ...

    def perform(self, action: Action) -> Any: ...


def run_step(ctx: Performer, name: str, fn: Callable[[Any], Step]) -> StepResult:
    started = time.monotonic()
    shown: list[str] = []
    try:
        steps = fn(ctx)
        result: Any = None
        while True:
            action = steps.send(result)
            shown.append(action.shown())
            result = None if ctx.check else ctx.perform(action)
    except StopIteration as stop:
        changed, unchanged = _outcome(stop.value)
        status, detail = ("changed", changed) if shown else ("ok", unchanged)
    except Skip as exc:
        status, detail = "skipped", str(exc)
    except Exception as exc:
        status, detail = "failed", why(exc)
    commands = shown if status in ("changed", "failed") else []
    return StepResult(name, status, detail, commands, time.monotonic() - started)  # type: ignore[arg-type]


def _outcome(value: Outcome | str | None) -> Outcome:
    if isinstance(value, tuple):
        return value
    return (value or "", value or "")


def why(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0] if len(text) < 400 else text[:400] + "…"
