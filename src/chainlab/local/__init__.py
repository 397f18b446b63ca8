"""The local lab: reference-lab hosts built from namespaces on this machine.

Public API: `plan_lab` (inventory -> LabPlan, pure), `up`, `down`, `status`,
`check_lab_route`, `build_image_tarball`.
"""

from chainlab.local.image import build_image_tarball
from chainlab.local.lab import check_lab_route, down, status, up
from chainlab.local.plan import HostPlan, LabPlan, plan_lab

__all__ = [
    "HostPlan", "LabPlan", "build_image_tarball", "check_lab_route", "down",
    "plan_lab", "status", "up",
]
