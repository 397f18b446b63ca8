"""Results of a run: per step, per host, and the Ansible-like recap (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "changed", "failed", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "changed", "failed", "skipped")


@dataclass
class StepResult:
    name: str
    status: Status
    detail: str = ""
    commands: list[str] = field(default_factory=list)  # what ran (or, with --check, would run)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "commands": self.commands, "seconds": round(self.seconds, 3)}


@dataclass
class HostReport:
    host: str
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None  # why the host failed (first failure), None if it did not
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for s in self.steps if s.status == status)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.count("failed") > 0

    def as_dict(self) -> dict[str, object]:
        return {
            **{status: self.count(status) for status in STATUSES},
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass
class RunReport:
    lab: str
    action: Literal["up", "down"]
    check: bool
    hosts: dict[str, HostReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(h.failed for h in self.hosts.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "lab": self.lab, "action": self.action, "check": self.check,
            "failed": self.failed, "seconds": round(self.seconds, 3), "notes": self.notes,
            "hosts": {name: h.as_dict() for name, h in self.hosts.items()},
        }


def recap_lines(report: RunReport) -> list[str]:
    """`master : ok=7 changed=0 failed=0 skipped=1`, one per host, names aligned."""
    width = max((len(h) for h in report.hosts), default=0)
    lines = []
    for name, host in report.hosts.items():
        counts = " ".join(f"{status}={host.count(status)}" for status in STATUSES)
        lines.append(f"{name:<{width}} : {counts}")
        if host.error:
            lines.append(f"{'':<{width}}   failed: {host.error}")
    return lines
