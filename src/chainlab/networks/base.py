"""What provisioning needs to know about the network the containers are on.

A network kind (`bridge`: Docker's own; `calico`: Calico 2.x in one of its modes) lives in
its own module behind this interface; adding one (say, Calico 3 with a Kubernetes datastore)
is a new module and a registry line in `chainlab.networks`. Its steps are generators of
actions like every provisioning step (`chainlab.provision.actions`), at fixed places:

    lab up:   lab_first → per host [base steps, node_up] → lab_up → per host [containers]
    lab down: per host [containers] → lab_down → per host [node_down, base steps] → lab_last
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar

from chainlab.inventory import Inventory
from chainlab.providers import Provider
from chainlab.provision.actions import Action, Outcome

if TYPE_CHECKING:
    from chainlab.labstate import ContainerState
    from chainlab.provision.context import HostContext, RunContext

HostStep = Callable[["HostContext"], Generator[Action, Any, Outcome]]
LabStep = Callable[["RunContext"], Generator[Action, Any, Outcome]]
#: The label every container and network made by lab up carries (value: the lab's name).
LABEL = "chainlab.lab"


class Network(ABC):
    """A network kind; one instance per inventory."""

    kind: ClassVar[str]

    def __init__(self, inv: Inventory, provider: Provider):
        self.inv = inv
        self.provider = provider

    # --- lab up ---------------------------------------------------------------------------

    def lab_first(self) -> list[tuple[str, LabStep]]:
        """Once, before any host is touched."""
        return []

    def node_up(self) -> list[tuple[str, HostStep]]:
        """Per host, after the base steps (trace log, rules, image), before the network."""
        return []

    def lab_up(self) -> list[tuple[str, LabStep]]:
        """Once, after every host's node steps, before the containers."""
        return []

    @abstractmethod
    def network_name(self, container: str) -> str:
        """The Docker network a container joins."""

    @abstractmethod
    def run_options(self, container: str) -> tuple[dict[str, Any], str]:
        """docker SDK `containers.run` keyword arguments for the network, and the same as
        `docker run` words (`--net net1`, `-p 8080:80`)."""

    def before_container(self, ctx: "HostContext", container: str) -> Generator[Action, Any, None]:
        """Actions a container of the network needs on its host before it is created (e.g. a
        bridge network)."""
        yield from ()

    @abstractmethod
    def container_state(self, ctx: "HostContext", attrs: dict[str, Any], container: str) -> "ContainerState":
        """What scenario runs need to know of a running container (address, interface), from its
        `docker inspect`."""

    def wait_ready(self, ctx: "HostContext", state: "ContainerState") -> None:
        """Return once the network carries the container's traffic (read-only, bounded)."""

    def docker_names(self, host: str) -> list[str]:
        """Docker objects (networks) of the network that lab up looks at on `host`."""
        return []

    def up_probes(self, host: str) -> list[list[str]]:
        """Read-only probes the network's steps will make on `host` during lab up, fetched with
        the facts in one round trip (an answer serves the identical probe once)."""
        return []

    # --- lab down -------------------------------------------------------------------------

    def lab_down(self) -> list[tuple[str, LabStep]]:
        """Once, after every host's containers are gone."""
        return []

    def node_down(self) -> list[tuple[str, HostStep]]:
        """Per host, after the containers and lab_down, before the base steps' undo."""
        return []

    def lab_last(self) -> list[tuple[str, LabStep]]:
        """Once, at the very end."""
        return []

    # --- what the rest of chainlab asks ------------------------------------------------

    def management_ports(self) -> list[int]:
        """Ports (TCP and UDP) of the network's control traffic, never traced (or every packet
        of the provisioning and scenario sessions would be)."""
        return []

    @abstractmethod
    def describe(self) -> str:
        """One line for `chainlab facts`."""
