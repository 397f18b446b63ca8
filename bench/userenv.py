"""The environment a user's shell gives the tools a benchmark runs.

The development VM exports PYTHONDONTWRITEBYTECODE=1 and PYTHONUNBUFFERED=1; a user's shell
sets neither. With the first, every run of a Python tool (chainlab, pyinfra, Ansible) compiles
its modules from source again instead of loading the cached bytecode, which is start-up cost
no user pays; with the second, stdout is written unbuffered. Benchmarks drop both before they
start any tool; a tool's first run then writes its bytecode cache (the lab benchmarks run
each tool once before timing it, trace_bench keeps each tool's fastest of several runs).
"""

from __future__ import annotations

import os

NOT_IN_A_USER_SHELL = ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")


def like_a_user_shell() -> list[str]:
    """Drop the variables above from this process's environment (children inherit that);
    returns those that were set."""
    return [name for name in NOT_IN_A_USER_SHELL if os.environ.pop(name, None) is not None]
