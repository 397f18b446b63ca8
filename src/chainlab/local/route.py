"""The local lab's safety rule, on its own: cheap to import for every command that connects."""

from __future__ import annotations

from ipaddress import IPv4Address

from chainlab.errors import ChainlabError
from chainlab.local import system as S
from chainlab.local.plan import LabPlan


def check_lab_route(plan: LabPlan, address: IPv4Address) -> None:
    """The safety rule: a lab address is only contacted through the lab's management link."""
    dev = S.route_device(address)
    if dev != plan.root_if:
        raise ChainlabError(
            f"refusing to connect to {address}: the machine routes it via {dev or 'nothing'},"
            f" not the lab link {plan.root_if} (is the local lab up? `chainlab local up`)"
        )
