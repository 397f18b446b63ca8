"""Compare an analysis with a scenario's expected hook paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chainlab.trace.analyze import hook_path
from chainlab.trace.model import Packet

if TYPE_CHECKING:  # pydantic costs 0.1 s to import; `analyze --format json` has no scenario
    from chainlab.scenario import Scenario

PROBE_PROTOCOL = {"ping": "icmp", "tcp": "tcp"}


@dataclass
class Check:
    node: str
    direction: str
    expected: list[str]
    actual: list[list[str]]
    verdicts: list[str]
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "direction": self.direction, "expected": self.expected,
            "actual": self.actual, "verdicts": self.verdicts, "ok": self.ok, "message": self.message,
        }


def probe_packet(packet: Packet, protocol: str) -> bool:
    """Packets the expectation speaks of: every echo, or a TCP connection's SYN/SYN-ACK."""
    if packet.protocol != protocol:
        return False
    return protocol != "tcp" or bool(packet.fields.tcp_flags and "SYN" in packet.fields.tcp_flags)


def check_scenario(scenario: Scenario, packets: list[Packet], nodes_with_logs: set[str]) -> list[Check]:
    """One check per node and direction of the scenario."""
    protocol = PROBE_PROTOCOL[scenario.probe.kind]
    tables = set(scenario.tables)
    checks = []
    for node, expectation in scenario.expect.items():
        for direction in ("request", "reply"):
            want = expectation.for_direction(direction)
            mine = [p for p in packets if p.node == node and p.direction == direction and probe_packet(p, protocol)]
            paths = [hook_path(p.steps, tables) for p in mine]
            distinct = [list(x) for x in dict.fromkeys(tuple(p) for p in paths)]
            verdicts = [p.verdict for p in mine]
            problems = []
            if node not in nodes_with_logs:
                problems.append(f"no trace log given for node {node}")
            elif not want.hooks:
                if mine:
                    problems.append(f"expected no {direction} packet, saw {len(mine)}")
            elif not mine:
                problems.append(f"expected {' → '.join(want.hooks)}, saw no {direction} packet")
            else:
                wrong = [p for p in distinct if p != want.hooks]
                if wrong:
                    problems.append(
                        f"expected {' → '.join(want.hooks)}, saw " + "; ".join(" → ".join(p) or "(nothing)" for p in wrong)
                    )
                if want.verdict and any(v != want.verdict for v in verdicts):
                    problems.append(f"expected verdict {want.verdict}, saw {', '.join(sorted(set(verdicts)))}")
                for p in mine:
                    chain = p.last_step.chain if p.last_step else None
                    if p.verdict == "dropped" and not want.drop_chain_matches(chain):
                        problems.append(f"expected the drop in {want.drop_chain}, it was in {chain}")
            message = "; ".join(problems) or (" → ".join(want.hooks) if want.hooks else "no packet, as expected")
            checks.append(Check(node, direction, want.hooks, distinct, verdicts, not problems, message))
    return checks
