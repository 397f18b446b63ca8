"""The local lab's safety rule, on its own: cheap to import for every command that connects."""

from __future__ import annotations

from ipaddress import IPv4Address

from chainlab.local import system as S
from chainlab.local.plan import LabPlan


def check_lab_route(plan: LabPlan, address: IPv4Address) -> None:
    """The safety rule: a lab address is only contacted through the lab's management link."""
    S.check_route(address, plan.root_if, "lab link", "is the local lab up? `chainlab local up`")
