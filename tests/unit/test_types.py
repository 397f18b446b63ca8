"""The package type-checks: mypy, as pyproject.toml configures it (pydantic's plugin; the
libraries without type information are Any)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_nothing_in_the_package(tmp_path: Path) -> None:
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path),
                                str(ROOT / "src" / "chainlab")])
    assert status == 0, out + err
    assert "Success: no issues found" in out
