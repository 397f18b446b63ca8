"""One run per lab: the flock helper and where the local lab keeps its lock."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chainlab.errors import ChainlabError
from chainlab.lock import exclusive


def test_second_holder_is_refused_with_the_first_pid(tmp_path):
    path = tmp_path / "lab.lock"
    with exclusive(path, "a lab up of lab x"):
        with pytest.raises(ChainlabError, match=r"a lab up of lab x is already running \(pid \d+, lock .*lab.lock\)"):
            with exclusive(path, "a lab up of lab x"):
                pass
    with exclusive(path, "a lab up of lab x"):
        pass


def test_lock_of_a_killed_process_is_free(tmp_path):
    path = tmp_path / "lab.lock"
    code = f"from chainlab.lock import exclusive\nfrom pathlib import Path\nimport os\n" \
           f"with exclusive(Path({str(path)!r}), 'x'):\n    os.kill(os.getpid(), 9)\n"
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    with exclusive(path, "x"):
        pass


def test_a_symlink_or_foreign_file_is_refused(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "lab.lock"
    link.symlink_to(target)
    with pytest.raises(ChainlabError, match="symlink there is refused"):
        with exclusive(link, "x"):
            pass
    assert target.read_text() == "keep me"
    fifo = tmp_path / "fifo.lock"
    os.mkfifo(fifo)
    with pytest.raises(ChainlabError, match="not a regular file"):
        with exclusive(fifo, "x"):
            pass
