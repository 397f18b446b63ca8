"""Compare an analysis with a scenario's expected hook paths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chainlab.trace.analyze import hook_path
from chainlab.trace.model import Packet

if TYPE_CHECKING:  # pydantic costs 0.1 s to import; `analyze --format json` has no scenario
    from chainlab.scenario import Scenario

PROBE_PROTOCOL = {"ping": "icmp", "tcp": "tcp"}


@dataclass
class Check:
    node: str
    direction: str
    expected: Sequence[str]
    actual: list[list[str]]
    verdicts: list[str]
    ok: bool
    message: str


def is_probe(protocol: str, syn: bool, probe: str) -> bool:
    """Packets the expectation speaks of: every echo, or a TCP connection's SYN/SYN-ACK
    (`probe`: the probe's protocol, PROBE_PROTOCOL)."""
    return protocol == probe and (probe != "tcp" or syn)


def probe_packet(packet: Packet, protocol: str) -> bool:
    """is_probe for an analysed packet."""
    return is_probe(packet.protocol, bool(packet.fields.tcp_flags and "SYN" in packet.fields.tcp_flags), protocol)


class Checker:
    """Collects, packet by packet, what the scenario's checks need: per node and direction
    of the scenario, the distinct hook paths (in its tables), verdicts and drop chains of
    the probe's packets."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.protocol = PROBE_PROTOCOL[scenario.probe.kind]
        self.tables = set(scenario.tables)
        self.seen: dict[tuple[str, str], tuple[dict[tuple[str, ...], None], list[str], list[str | None]]] = {
            (node, direction): ({}, [], []) for node in scenario.expect for direction in ("request", "reply")
        }

    def add(self, packet: Packet) -> None:
        last = packet.last_step
        self.add_walk(packet.node, packet.direction, probe_packet(packet, self.protocol),
                      hook_path(packet.steps, self.tables), packet.verdict, last.chain if last else None)

    def add_walk(self, node: str, direction: str, probe: bool, hooks: list[str], verdict: str,
                 last_chain: str | None) -> None:
        """One packet, as what the checks need of it: is it the probe's, its hook path in the
        scenario's tables, its verdict, the chain of its last step."""
        seen = self.seen.get((node, direction))
        if seen is None or not probe:
            return
        paths, verdicts, drops = seen
        paths.setdefault(tuple(hooks), None)
        verdicts.append(verdict)
        if verdict == "dropped":
            drops.append(last_chain)

    def probe_packets(self) -> str:
        """What counts as the probe's packets, in words (other packets of the log do not)."""
        return "a TCP SYN or SYN-ACK" if self.protocol == "tcp" else f"{self.protocol.upper()} only"

    def checks(self, nodes_with_logs: set[str]) -> list[Check]:
        """One check per node and direction of the scenario."""
        checks = []
        for node, expectation in self.scenario.expect.items():
            for direction in ("request", "reply"):
                want = expectation.for_direction(direction)
                paths, verdicts, drops = self.seen[(node, direction)]
                distinct = [list(p) for p in paths]
                problems = []
                if node not in nodes_with_logs:
                    problems.append(f"no trace log given for node {node}")
                elif not want.hooks:
                    if verdicts:
                        problems.append(f"expected no {direction} packet, saw {len(verdicts)}")
                elif not verdicts:
                    problems.append(f"expected {' → '.join(want.hooks)}, saw no {direction} packet of the probe"
                                    f" ({self.probe_packets()})")
                else:
                    wrong = [p for p in distinct if p != want.hooks]
                    if wrong:
                        problems.append(
                            f"expected {' → '.join(want.hooks)}, saw "
                            + "; ".join(" → ".join(p) or "(nothing)" for p in wrong)
                        )
                    if want.verdict and any(v != want.verdict for v in verdicts):
                        problems.append(f"expected verdict {want.verdict}, saw {', '.join(sorted(set(verdicts)))}")
                    for chain in drops:
                        if not want.drop_chain_matches(chain):
                            problems.append(f"expected the drop in {want.drop_chain}, it was in {chain}")
                message = "; ".join(problems) or (" → ".join(want.hooks) if want.hooks else "no packet, as expected")
                checks.append(Check(node, direction, want.hooks, distinct, verdicts, not problems, message))
        return checks


def check_scenario(scenario: Scenario, packets: list[Packet], nodes_with_logs: set[str]) -> list[Check]:
    """One check per node and direction of the scenario."""
    checker = Checker(scenario)
    for packet in packets:
        checker.add(packet)
    return checker.checks(nodes_with_logs)
