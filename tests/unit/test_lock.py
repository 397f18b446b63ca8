"""One run per lab: the flock helper and where the local lab keeps its lock."""

from __future__ import annotations

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
