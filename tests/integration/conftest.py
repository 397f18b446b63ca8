"""Fixtures for tests against the local lab (root, Debian packages from `make local-deps`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chainlab.inventory import Inventory, load_inventory
from chainlab.local import down, plan_lab, up
from chainlab.local.plan import LabPlan

from . import suite

ROOT = Path(__file__).resolve().parents[2]
LAB_YAML = ROOT / "lab" / "local.yaml"
#: The test lab: lab/local.yaml on its own lan and lab name (so it never collides with a
#: lab someone brought up by hand), slave2 in the nft flavour so both flavours are covered.
TEST_LAB = "itest"
TEST_LAN = "10.231.92"

SNAPSHOT_COMMANDS = [
    ["ip", "-d", "link"],
    ["ip", "route"],
    ["ip", "-6", "route"],
    ["iptables-save"],
    ["iptables-legacy-save"],
    ["ip6tables-save"],
    ["nft", "list", "ruleset"],
    ["cat", "/proc/self/mountinfo"],
    ["ls", "-a", "/run/netns"],
]


def _unit_test_tmpfs(line: str) -> bool:
    """A mountinfo line of a tmpfs that a unit test mounted in its pytest temp dir meanwhile
    (`make test` runs them beside): not the lab's (a lab's bind mount that leaked into the
    machine's namespace names a pytest temp dir as its root, not as its mount point)."""
    fields = line.split()
    return len(fields) > 4 and "/pytest-of-" in fields[4] and " - tmpfs " in line


def root_snapshot() -> dict[str, str]:
    """What must be identical in the machine's namespace before `up` and after `down`."""
    snap = {}
    for argv in SNAPSHOT_COMMANDS:
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        # iptables-save stamps comment lines with the current time
        snap[" ".join(argv)] = "\n".join(line for line in out.splitlines()
                                         if not line.startswith("#") and not _unit_test_tmpfs(line))
    cgroups = Path("/sys/fs/cgroup")
    snap["cgroups"] = "\n".join(sorted(str(p) for p in cgroups.glob("*/*") if p.is_dir()))
    return snap


def make_inventory_file(directory: Path, lab: str = TEST_LAB, lan: str = TEST_LAN, source: Path = LAB_YAML) -> Path:
    """`source` renamed `lab`, on `lan` (e.g. 10.231.92), state in `directory`; a slave2 runs nft."""
    doc = yaml.safe_load(source.read_text())
    doc["lab"] = lab
    doc["local"] = {"lan": f"{lan}.1/24", "state_dir": str(directory / "state")}
    for host in doc["hosts"].values():
        host["address"] = f"{lan}.{str(host['address']).rsplit('.', 1)[1]}"
    if "slave2" in doc["hosts"]:
        doc["hosts"]["slave2"]["iptables"] = "nft"
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    suite.register(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def one_suite_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Wait for another integration suite on this machine, then take down labs a killed one left."""
    if os.geteuid() != 0:
        yield
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        """On the terminal even while pytest captures the test's output; stderr, not the
        terminal reporter, whose lines an xdist worker (`make test`) never shows."""
        if capture is not None:
            with capture.global_and_fixture_disabled():
                print(f"chainlab tests: {line}", file=sys.stderr, flush=True)

    fd = suite.hold_lock(say)
    try:
        suite.sweep(say)
        yield
        suite.forget_downed()
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def root_before() -> dict[str, str]:
    return root_snapshot()


@pytest.fixture(scope="session")
def inventory_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the local lab needs root")
    return make_inventory_file(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def inventory(inventory_path: Path) -> Inventory:
    return load_inventory(inventory_path)


@pytest.fixture(scope="session")
def plan(inventory: Inventory) -> LabPlan:
    return plan_lab(inventory)


@pytest.fixture(scope="session")
def lab(plan: LabPlan, root_before: dict[str, str]) -> Iterator[LabPlan]:
    """The lab, up for the whole session and always torn down, also when `up` fails."""
    try:
        up(plan, log=lambda *_: None)
        yield plan
    finally:
        down(plan, log=lambda *_: None)
