"""Network kinds: what the containers are on. One module per kind, one line each here."""

from __future__ import annotations

import importlib

from chainlab.inventory import Inventory
from chainlab.networks.base import LABEL, Network
from chainlab.providers import Provider

#: `calico.driver` -> "module:class".
REGISTRY: dict[str, str] = {
    "bridge": "chainlab.networks.bridge:BridgeNetwork",
    "calico": "chainlab.networks.calico:CalicoNetwork",
}


def network_for(inv: Inventory, provider: Provider) -> Network:
    module, _, name = REGISTRY[inv.calico.driver].partition(":")
    cls: type[Network] = getattr(importlib.import_module(module), name)
    return cls(inv, provider)


__all__ = ["LABEL", "Network", "network_for"]
