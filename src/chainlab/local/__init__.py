"""The local lab: reference-lab hosts built from namespaces on this machine.

Public API: `plan_lab` (inventory -> LabPlan, pure), `up`, `down`, `status`,
`check_lab_route`, `build_image_tarball`. Imported on first use: connecting to a local
lab's host needs only the plan and the route check, not the machinery that builds it.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "HostPlan": "plan", "LabPlan": "plan", "plan_lab": "plan", "check_lab_route": "route",
    "build_image_tarball": "image", "down": "lab", "status": "lab", "up": "lab",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"chainlab.local.{_WHERE[name]}"), name)
