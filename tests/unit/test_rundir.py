"""Run dirs: unique names made exclusively, PARTIAL until complete, the runs dir checked up front."""

from __future__ import annotations

import os
import stat
from datetime import datetime

import pytest

from chainlab.errors import ChainlabError
from chainlab.rundir import (
    PARTIAL, check_runs_root, create_run_dir, is_complete, mark_complete, nightly_lab_and_stamp, parse_run_name, slug,
)

NOW = datetime(2026, 11, 26, 1, 20, 23, 417_000)


def test_names_carry_lab_time_and_scenario_and_parse_back(tmp_path):
    run = create_run_dir(tmp_path, "rel", "-03-container-to-another-node", now=NOW)
    assert run.name == "rel-20261126-012023.417-03-container-to-another-node"
    name = parse_run_name(run.name)
    assert name is not None and (name.lab, name.scenario_id, name.slug) == ("rel", 3, "container-to-another-node")
    old = parse_run_name("20261126-012023-04-another-node-to-a-container")  # before lab names
    assert old is not None and (old.lab, old.scenario_id) == (None, 4)
    nightly = create_run_dir(tmp_path, "nightly-my-lab", now=NOW)
    assert nightly_lab_and_stamp(nightly.name) == ("my-lab", "20261126-012023.417")
    assert nightly_lab_and_stamp("nightly-20250101") == (None, "20250101")
    assert slug("Pings \x00 a\tcontainer!") == "pings-a-container" and slug("\x00") == "scenario"


def test_same_millisecond_gets_the_next_name_never_the_same_dir(tmp_path):
    first = create_run_dir(tmp_path, "nightly-rel", now=NOW)
    (first / "mine").write_text("evidence of the first run")
    second = create_run_dir(tmp_path, "nightly-rel", now=NOW)
    assert first != second and second.name == "nightly-rel-20261126-012023.418"
    assert sorted(p.name for p in second.iterdir()) == [PARTIAL]
    assert (first / "mine").read_text() == "evidence of the first run"


def test_partial_until_marked_complete_and_private(tmp_path):
    run = create_run_dir(tmp_path, "rel", "-01-x")
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert not is_complete(run) and "removed once every piece of evidence is written" in (run / PARTIAL).read_text()
    mark_complete(run)
    assert is_complete(run)
    legacy = tmp_path / "20250101-030000-01-x"
    legacy.mkdir()
    assert is_complete(legacy)  # run dirs from before the marker count as complete


def test_runs_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("")
    with pytest.raises(ChainlabError, match="is not a directory"):
        check_runs_root(tmp_path / "runs")


def test_runs_root_is_made_when_missing(tmp_path):
    check_runs_root(tmp_path / "a" / "runs")
    assert (tmp_path / "a" / "runs").is_dir() and not any((tmp_path / "a" / "runs").iterdir())


def test_a_1_mb_runs_dir_is_one_clear_error(tmpfs):
    small = tmpfs("size=1m")
    with pytest.raises(ChainlabError, match=r"runs directory .* has 1.0 MB free; a run needs at least 32 MB"):
        check_runs_root(small)
    assert list(small.iterdir()) == []


def test_a_read_only_runs_dir_is_one_clear_error(tmpfs):
    ro = tmpfs("size=64m,ro")
    with pytest.raises(ChainlabError, match=r"cannot take a run's evidence: Read-only file system \(choose a writable"):
        check_runs_root(ro)
    with pytest.raises(ChainlabError, match=r"cannot create the runs directory .*: Read-only file system"):
        check_runs_root(ro / "runs")


def test_a_runs_dir_without_inodes_is_refused(tmpfs):
    few = tmpfs("size=64m,nr_inodes=100")
    with pytest.raises(ChainlabError, match="free inodes"):
        check_runs_root(few)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_runs_dir_another_user_can_change_is_refused(tmp_path):
    """Another user's runs dir, or one in another user's directory, or one anyone may write
    in without the sticky bit: that user could put links where the evidence goes."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    in_theirs = theirs / "runs"
    in_theirs.mkdir()
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    for root in (theirs, in_theirs, open_to_all):
        with pytest.raises(ChainlabError, match="belongs to another user, or others may write in it"):
            check_runs_root(root)
        with pytest.raises(ChainlabError, match="belongs to another user, or others may write in it"):
            create_run_dir(root, "lab-01")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    check_runs_root(sticky)
    assert create_run_dir(sticky, "lab-01").parent == sticky
