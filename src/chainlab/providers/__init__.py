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
}


def provider_class(kind: str) -> type[Provider]:
    module, _, name = REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def provider_for(inv: "Inventory") -> Provider:
    return provider_class(inv.provider)(inv)


__all__ = ["EmulationRuntime", "HostHints", "Provider", "Target", "provider_class", "provider_for"]
