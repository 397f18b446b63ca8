"""The C engine's source files and their digest, which each build carries (ENGINE_SOURCE).

_engine.c includes its parts from engine/ in the order it names them; the digest covers
_engine.c and each of those parts, in that order. setup.py loads this file by its path (chainlab
is not importable while it builds); native.py compares a build's digest with the sources
beside it, so a build that a failed compile of changed sources left in place is refused.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

MAIN = "_engine.c"
_PART = re.compile(rb'^#include "(engine/[a-z_]+\.c)"$', re.M)


def files(trace_dir: Path) -> list[Path]:
    """_engine.c, then the parts it includes, in its order (OSError: _engine.c unreadable)."""
    main = trace_dir / MAIN
    return [main, *(trace_dir / part.decode() for part in _PART.findall(main.read_bytes()))]


def digest(trace_dir: Path) -> str:
    """SHA-256 over each file's name, length and bytes (OSError: a file unreadable)."""
    sha = hashlib.sha256()
    for path in files(trace_dir):
        data = path.read_bytes()
        sha.update(f"{path.relative_to(trace_dir)}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()
