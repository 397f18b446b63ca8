"""chainlab's pytest plugin (entry point `pytest11`): off unless `--chainlab-inventory` is given.

- `pytest scenarios/ --chainlab-inventory lab/local.yaml`: every `NN-*.yaml` scenario is a
  test item, run on the provisioned lab like `chainlab run`; a failure prints the
  expected-vs-seen table; `--junitxml` is pytest's own. A scenario for another network
  (a Docker-bridge scenario on a Calico lab) is skipped.
- the session fixture `lab`: a `chainlab.run.explore.Lab` on that inventory, so a test says
  `assert lab.probe("slave1", "web1").dropped_at(node="master", chain="cali-tw-*")`.
- `--chainlab-up`: bring the lab up before the first test that needs it (`local up` for a
  local lab that is not up, then `lab up`) and take down at the end what the session
  brought up. Without it the lab is used as it is, never provisioned behind your back.
- `--chainlab-runs DIR`: where run dirs go (default `runs`).

Importing this module costs nothing else: chainlab's modules load when a test needs them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chainlab.inventory import Inventory
    from chainlab.run.explore import Lab
    from chainlab.run.runner import RunResult

SCENARIO_FILE = re.compile(r"^[0-9][0-9]-.*\.yaml$")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chainlab", "chainlab: scenarios and probes on a provisioned lab")
    group.addoption("--chainlab-inventory", metavar="PATH",
                    help="Inventory of the lab: turns scenarios/NN-*.yaml into tests and enables the `lab` fixture.")
    group.addoption("--chainlab-up", action="store_true",
                    help="Bring the lab up first (local up, lab up); take down what the session brought up.")
    group.addoption("--chainlab-runs", metavar="DIR", default="runs", help="Where run dirs go (default: runs).")


@dataclass
class _LabSession:
    """The lab of this pytest session: loaded (and with --chainlab-up brought up) on first use."""

    inventory_path: Path
    runs: Path
    bring_up: bool
    _lab: Lab | None = None
    _error: Exception | None = None
    undo: list[str] = field(default_factory=list)  # what to take down at the end: "lab", "local"

    def lab(self) -> Lab:
        if self._error is not None:
            raise self._error
        if self._lab is None:
            try:
                from chainlab.run.explore import Lab

                lab = Lab(self.inventory_path, self.runs)
                if self.bring_up:
                    self._up(lab.inventory)
                self._lab = lab
            except Exception as exc:
                self._error = exc
                raise
        return self._lab

    def _up(self, inv: Inventory) -> None:
        from rich.console import Console

        from chainlab.errors import ChainlabError
        from chainlab.labstate import state_path
        from chainlab.provision import provision

        if inv.local is not None:
            from chainlab.local import plan_lab, status, up

            plan = plan_lab(inv)
            if not all(row.daemons.get("sshd") for row in status(plan)):
                self.undo.append("local")
                up(plan, log=lambda *_: None)
        provisioned = state_path(inv).is_file()
        out = io.StringIO()
        report = provision(inv, "up", console=Console(file=out, width=160, color_system=None))
        if not provisioned and "local" not in self.undo:
            self.undo.append("lab")
        if report.failed:
            raise ChainlabError(f"--chainlab-up: lab up failed\n{out.getvalue()}")

    def down(self) -> None:
        if not self.undo:
            return
        from chainlab.inventory import load_inventory

        inv = load_inventory(self.inventory_path)
        if "local" in self.undo:
            from chainlab.local import down, plan_lab

            down(plan_lab(inv), log=lambda *_: None)
        elif "lab" in self.undo:
            from rich.console import Console

            from chainlab.provision import provision

            provision(inv, "down", console=Console(file=io.StringIO()))


_SESSION = pytest.StashKey[_LabSession]()


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("chainlab_inventory")
    if path is None:
        if config.getoption("chainlab_up"):
            raise pytest.UsageError("--chainlab-up needs --chainlab-inventory PATH")
        return
    if not Path(path).is_file():
        raise pytest.UsageError(f"--chainlab-inventory {path}: no such file")
    config.stash[_SESSION] = _LabSession(Path(path), Path(config.getoption("chainlab_runs")),
                                         bool(config.getoption("chainlab_up")))


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.down()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _SESSION in parent.config.stash and SCENARIO_FILE.match(file_path.name):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab of `--chainlab-inventory` (skips the test without it)."""
    session = request.config.stash.get(_SESSION, None)
    if session is None:
        pytest.skip("the `lab` fixture needs --chainlab-inventory PATH")
    yield session.lab()


class ScenarioFailed(Exception):
    def __init__(self, result: RunResult):
        super().__init__(f"scenario {result.scenario.id} failed")
        self.result = result


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[ScenarioItem]:
        yield ScenarioItem.from_parent(self, name=self.path.stem)


class ScenarioItem(pytest.Item):
    """One scenario file, run on the lab like `chainlab run N`."""

    def runtest(self) -> None:
        from chainlab.run.runner import run_scenario
        from chainlab.scenario import load_scenario

        lab = self.config.stash[_SESSION].lab()
        scenario = load_scenario(self.path)
        if scenario.network != lab.inventory.calico.driver:
            pytest.skip(f"scenario {scenario.id} needs a {scenario.network} lab; "
                        f"lab {lab.inventory.lab} is {lab.inventory.calico.driver}")
        result = run_scenario(lab.inventory, self.path, lab.runs, log=lambda *_: None)
        self.user_properties.append(("run_dir", str(result.run_dir)))
        if not result.passed:
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        from chainlab.errors import ChainlabError

        if isinstance(excinfo.value, ScenarioFailed):
            return failure_text(excinfo.value.result)
        if isinstance(excinfo.value, ChainlabError):
            return f"chainlab: {excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.path.name}"


def failure_text(result: RunResult) -> str:
    """The expected-vs-seen table of a failed scenario run, with the drops and the evidence."""
    from chainlab.trace.expect import PROBE_PROTOCOL, probe_packet

    scenario = result.scenario
    protocol = PROBE_PROTOCOL[scenario.probe.kind]
    rows = [("node", "direction", "expected", "seen", "result")]
    for check in result.checks:
        want = scenario.expect[check.node].for_direction(check.direction)
        expected = " → ".join(want.hooks) or "(none)"
        if want.verdict:
            expected += f", {want.verdict}" + (f" in {want.drop_chain}" if want.drop_chain else "")
        seen_packets = [p for p in result.analysis.packets
                        if p.node == check.node and p.direction == check.direction and probe_packet(p, protocol)]
        seen = "; ".join(" → ".join(path) or "(nothing)" for path in check.actual) or "(none)"
        verdicts = sorted({p.verdict for p in seen_packets})
        if verdicts:
            seen += ", " + "/".join(verdicts)
        drops = sorted({p.last_step.chain for p in seen_packets if p.verdict == "dropped" and p.last_step})
        if drops:
            seen += f" in {', '.join(drops)}"
        rows.append((check.node, check.direction, expected, seen, "PASS" if check.ok else f"FAIL: {check.message}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"scenario {scenario.id}: {scenario.title}: expected vs seen"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines += result.notes
    lines.append(f"evidence: {result.run_dir}/report.html")
    return "\n".join(lines)
