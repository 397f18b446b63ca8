from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PUBLIC = ROOT.parent / "shared" / "fixtures" / "public-traces"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
