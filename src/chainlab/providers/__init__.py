"""Provider kinds: where a lab's hosts come from. One module per kind, one line each here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from chainlab.providers.base import EmulationRuntime, HostHints, Provider, Target

if TYPE_CHECKING:
    from chainlab.inventory import Inventory

#: kind -> "module:class"; imported on first use, so validating an inventory stays cheap.
REGISTRY: dict[str, str] = {
    "local": "chainlab.providers.local:LocalProvider",
    "ssh": "chainlab.providers.ssh:SshProvider",
    "qemu": "chainlab.providers.qemu:QemuProvider",
}


def provider_class(kind: str) -> type[Provider]:
    module, _, name = REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module), name)


#: id(inventory) -> (the inventory, its provider); the inventory is held, so its id stays its own
_PROVIDERS: dict[int, tuple["Inventory", Provider]] = {}


def provider_for(inv: "Inventory") -> Provider:
    """The inventory's provider, one instance per (frozen) inventory: it keeps what it derives
    from it (a lab's plan) for every host and connection of a command."""
    held = _PROVIDERS.get(id(inv))
    if held is None:
        held = _PROVIDERS[id(inv)] = (inv, provider_class(inv.provider)(inv))
    return held[1]


__all__ = ["EmulationRuntime", "HostHints", "Provider", "Target", "provider_class", "provider_for"]
