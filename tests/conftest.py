import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PUBLIC = ROOT.parent / "shared" / "fixtures" / "public-traces"


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
