"""A lab's process record (state.json): what `up` started, read strictly, saved atomically
(0600: root's only).

Shared by the labs this machine builds (local, VM): each has its own pydantic model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from chainlab.errors import ChainlabError
from chainlab.files import PRIVATE_FILE, write_atomic

M = TypeVar("M", bound=BaseModel)


class RecordFile(Generic[M]):
    """The record in memory and on disk, saved after every change (threads share it)."""

    def __init__(self, path: Path, state: M):
        self.path = path
        self.state = state
        self.lock = threading.Lock()

    def save(self) -> None:
        with self.lock:
            write_atomic(self.path, self.state.model_dump_json(indent=2), PRIVATE_FILE)


def load_record(model: type[M], path: Path, down_command: str) -> M | None:
    """The record at `path`, None if there is none; an unreadable one is an error that says
    `down_command` removes the lab without it."""
    try:
        return model.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ChainlabError(f"{path} is unreadable ({type(exc).__name__}); `{down_command}` removes the lab"
                            " without it") from None
