"""What a Calico mode does on each host; the rest (pool, network, containers) is shared."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

from chainlab.provision.actions import Action, Outcome
from chainlab.provision.context import HostContext

if TYPE_CHECKING:
    from chainlab.networks.calico import CalicoNetwork


class Mode(ABC):
    name: ClassVar[str]

    def __init__(self, network: "CalicoNetwork"):
        self.network = network

    @abstractmethod
    def node_up(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        """Make the host a Calico node whose drivers dockerd finds."""

    @abstractmethod
    def node_down(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        """Undo `node_up` (nothing for a node that was there before)."""

    def probes(self) -> list[list[str]]:
        """Read-only probes `node_up` makes (prefetched with the facts)."""
        return []

    @abstractmethod
    def describe(self) -> str:
        ...
