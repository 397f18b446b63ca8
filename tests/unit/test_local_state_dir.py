"""`local.state_dir` is removed by `local down` only if chainlab made it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.local import lab as L
from chainlab.local import plan_lab

ROOT = Path(__file__).resolve().parents[2]


def plan_in(state_dir: Path):
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["local"]["state_dir"] = str(state_dir)
    return plan_lab(Inventory.model_validate(doc))


def test_dotdot_in_state_dir_is_refused_by_the_schema():
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["local"]["state_dir"] = "/var/lib/../.."
    with pytest.raises(ValueError, match=r"without '\.\.'"):
        Inventory.model_validate(doc)


def test_only_missing_empty_or_chainlab_made_dirs_are_ours(tmp_path):
    missing = plan_in(tmp_path / "missing" / "state")
    assert L._ours(missing)
    empty = tmp_path / "empty" / "state"
    empty.mkdir(parents=True)
    assert L._ours(plan_in(empty))
    someone = tmp_path / "someone" / "home"
    someone.mkdir(parents=True)
    (someone / "thesis.tex").write_text("precious")
    assert not L._ours(plan_in(someone))
    (someone / "state.json").write_text("{}")
    assert L._ours(plan_in(someone))


def test_corrupt_state_file_is_a_clean_error(tmp_path):
    plan = plan_in(tmp_path / "lab" / "state")
    plan.state_dir.mkdir(parents=True)
    plan.state_file.write_text("{not json")
    with pytest.raises(ChainlabError, match="unreadable.*local down"):
        L.load_state(plan)
