"""Scenario files: a probe between two endpoints and the paths it must take."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from chainlab.errors import InputError, Problem
from chainlab.inventory import Strict
from chainlab.names import ContainerName, HostName
from chainlab.trace.netfilter import HOOKS, TABLES
from chainlab.validation import LocatedValueError, validate_document
from chainlab.yamlfile import load_yaml

Hook = Literal["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
Table = Literal["raw", "mangle", "nat", "filter", "security"]
#: The tables a scenario states its expected hook paths in, unless it says otherwise.
DEFAULT_TABLES: tuple[Table, ...] = ("nat", "filter")
assert set(Hook.__args__) == set(HOOKS) and set(Table.__args__) == set(TABLES)  # type: ignore[attr-defined]


class Endpoint(Strict):
    """A host (probe runs in its shell) or a container (probe runs via docker exec)."""

    host: HostName | None = None
    container: ContainerName | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "Endpoint":
        if (self.host is None) == (self.container is None):
            raise ValueError("give exactly one of `host` or `container`")
        return self

    @property
    def label(self) -> str:
        return self.host or self.container or "?"


class PingProbe(Strict):
    kind: Literal["ping"]
    count: int = Field(1, ge=1, le=100)


class TcpProbe(Strict):
    kind: Literal["tcp"]
    port: int = Field(ge=1, le=65535)


class PathExpectation(Strict):
    """Expected hook path of one direction on one node; `[]` means no packet at all."""

    hooks: list[Hook]
    verdict: Literal["accepted", "dropped", "unknown"] | None = None
    drop_chain: str | None = Field(None, description="glob the drop's chain must match, e.g. cali-tw-*")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, list):
            return {"hooks": value}
        if value == "none":
            return {"hooks": []}
        if value is None or isinstance(value, (str, int, float, bool)):
            raise ValueError(
                "expected a list of hooks (e.g. [PREROUTING, FORWARD]), `none`,"
                " or a mapping with hooks/verdict/drop_chain"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "PathExpectation":
        if not self.hooks and (self.verdict is not None or self.drop_chain is not None):
            raise ValueError("no packet (`none`, `[]`) has no verdict or drop chain")
        if self.drop_chain is not None and self.verdict not in (None, "dropped"):
            raise ValueError(f"a drop chain goes with verdict dropped, not {self.verdict}")
        return self

    def drop_chain_matches(self, chain: str | None) -> bool:
        return self.drop_chain is None or (chain is not None and fnmatch.fnmatchcase(chain, self.drop_chain))


class NodeExpectation(Strict):
    request: PathExpectation
    reply: PathExpectation

    def for_direction(self, direction: str) -> PathExpectation:
        return self.request if direction == "request" else self.reply


class Scenario(Strict):
    id: int = Field(ge=1, le=999, strict=True)
    title: str = Field(min_length=1, max_length=120)
    description: str = ""
    network: Literal["calico", "bridge"] = "calico"
    source: Endpoint
    target: Endpoint
    probe: Annotated[PingProbe | TcpProbe, Field(discriminator="kind")]
    tables: list[Table] = Field(
        default_factory=lambda: list(DEFAULT_TABLES), min_length=1,
        description="tables in which the expected hook paths are stated",
    )
    outcome: Literal["reachable", "unreachable"]
    expect: dict[HostName, NodeExpectation] = Field(min_length=1)

    @model_validator(mode="after")
    def _two_endpoints(self) -> "Scenario":
        if self.source == self.target:
            raise LocatedValueError(("target",), f"the target is the source ({self.source.label})")
        return self

    @property
    def probe_port(self) -> int | None:
        """The TCP port the probe connects to (None: a ping)."""
        return self.probe.port if isinstance(self.probe, TcpProbe) else None

    def unknown_names(self, hosts: Collection[str], containers: Collection[str]) -> list[str]:
        """What the scenario names that the inventory does not have (empty: it fits)."""
        problems = [f"{what} {name} is not a {what} of the inventory" for what, name, known in (
            *(("host", e.host, hosts) for e in (self.source, self.target) if e.host),
            *(("container", e.container, containers) for e in (self.source, self.target) if e.container),
            *(("host", node, hosts) for node in self.expect)) if name not in known]
        return list(dict.fromkeys(problems))


def load_scenario(path: Path) -> Scenario:
    scenario = validate_document(Scenario, load_yaml(path))
    number = path.name.partition("-")[0]
    if number.isdigit() and int(number) != scenario.id:  # NN-*.yaml: run N and nightly go by the name
        raise InputError([Problem(str(path), "id", f"is {scenario.id}, the file name says {int(number)}")])
    return scenario



def find_scenario(directory: Path, number: int) -> Path:
    """The file `NN-*.yaml` in `directory` for scenario `number`."""
    matches = sorted(directory.glob(f"{number:02d}-*.yaml"))
    if len(matches) != 1:
        raise InputError([Problem(str(directory), "", f"expected one file {number:02d}-*.yaml, found {len(matches)}")])
    return matches[0]
