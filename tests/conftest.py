import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PUBLIC = FIXTURES / "public-traces"  # copied from ../shared/fixtures/public-traces, with its README


#: Fixtures that change the machine itself (a mount shows in the local lab tests' snapshot
#: of the machine's namespace).
MACHINE_FIXTURES = {"tmpfs", "tiny_tmpfs"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers with `--dist loadgroup`: every test that
    changes the machine (the labs' namespaces, links, routes, daemons, VMs; mounts) is in one
    group, run by one worker in the order collected, as a suite of its own would (the labs'
    module and session fixtures, the before/after snapshots of the machine); the tests of
    pure logic run on the other worker meanwhile. Without xdist the mark does nothing."""
    for item in items:
        if item.get_closest_marker("integration") or MACHINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("machine"))


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
