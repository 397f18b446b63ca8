import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PUBLIC = FIXTURES / "public-traces"  # copied from ../shared/fixtures/public-traces, with its README


#: Where the tests that change the machine (labs' namespaces, links, routes and daemons; VMs)
#: are: one pytest-xdist worker runs them all, in order.
MACHINE_TESTS = "tests/integration/"


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`make test` runs two pytest-xdist workers: one takes every test under MACHINE_TESTS
    as one unit, in the order collected, as a suite of its own would (the labs' module and
    session fixtures, the suite lock, the before/after snapshots of the machine); the
    other takes the pure-logic tests, a module at a time, meanwhile. (A scheduler, not
    `xdist_group` marks: pytest 9 ignores the node ids xdist 3.8 rewrites for them.) Only for
    xdist's default `--dist load`; another `--dist` is xdist's own. Node ids are relative to
    the rootdir, this repository."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class MachineTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "machine" if nodeid.startswith(MACHINE_TESTS) else super()._split_scope(nodeid)

    return MachineTestsTogether(config, log)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket fails the test: --check on inventory.yaml must not connect."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use during --check: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(options) -> a fresh tmpfs mounted with those options (size=1m, ro, nr_inodes=...);
    all unmounted after the test. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", str(mnt)], check=True)
