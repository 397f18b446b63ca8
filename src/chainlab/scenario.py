"""Scenario files: a probe between two endpoints and the paths it must take."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from chainlab.errors import InputError, Problem
from chainlab.inventory import Strict
from chainlab.names import ContainerName, HostName
from chainlab.trace.netfilter import HOOKS, TABLES
from chainlab.validation import validate_document
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

    def drop_chain_matches(self, chain: str | None) -> bool:
        return self.drop_chain is None or (chain is not None and fnmatch.fnmatchcase(chain, self.drop_chain))


class NodeExpectation(Strict):
    request: PathExpectation
    reply: PathExpectation

    def for_direction(self, direction: str) -> PathExpectation:
        return self.request if direction == "request" else self.reply


class Scenario(Strict):
    id: int = Field(ge=1, le=999)
    title: str = Field(min_length=1, max_length=120)
    description: str = ""
    network: Literal["calico", "bridge"] = "calico"
    source: Endpoint
    target: Endpoint
    probe: Annotated[PingProbe | TcpProbe, Field(discriminator="kind")]
    tables: list[Table] = Field(
        default_factory=lambda: list(DEFAULT_TABLES),
        description="tables in which the expected hook paths are stated",
    )
    outcome: Literal["reachable", "unreachable"]
    expect: dict[HostName, NodeExpectation] = Field(min_length=1)


def load_scenario(path: Path) -> Scenario:
    return validate_document(Scenario, load_yaml(path))


def find_scenario(directory: Path, number: int) -> Path:
    """The file `NN-*.yaml` in `directory` for scenario `number`."""
    matches = sorted(directory.glob(f"{number:02d}-*.yaml"))
    if len(matches) != 1:
        raise InputError([Problem(str(directory), "", f"expected one file {number:02d}-*.yaml, found {len(matches)}")])
    return matches[0]
