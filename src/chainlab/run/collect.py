"""Exactly the log bytes a probe produced on each node: mark the end before, read after.

A mark is (inode, size). If the file was rotated (new inode) or truncated, the slice is
the whole new file. Reading waits until the files are quiet, polling with tenacity, never
with a fixed sleep.
"""

from __future__ import annotations

from dataclasses import dataclass

import fabric

from chainlab.remote import run


@dataclass(frozen=True)
class LogMark:
    inode: int | None
    size: int


def mark(conn: fabric.Connection, path: str) -> LogMark:
    """Where the trace file ends now (a missing file is empty)."""
    result = run(conn, ["stat", "-c", "%i %s", path], check=False)
    if not result.ok:
        return LogMark(None, 0)
    inode, size = result.stdout.split()
    return LogMark(int(inode), int(size))


def slice_start(before: LogMark, now: LogMark) -> int:
    """Offset of the first new byte: 0 after rotation or truncation."""
    if before.inode is None or now.inode != before.inode or now.size < before.size:
        return 0
    return before.size


def read_slice(conn: fabric.Connection, path: str, before: LogMark) -> tuple[str, LogMark]:
    """New text since `before` (up to the current end), and the current mark."""
    now = mark(conn, path)
    start = slice_start(before, now)
    if now.inode is None or now.size <= start:
        return "", now
    result = run(conn, ["head", "-c", str(now.size - start), "--", path] if start == 0 else
                 ["sh", "-c", 'tail -c +"$1" -- "$2" | head -c "$3"', "sh", str(start + 1), path, str(now.size - start)])
    return result.stdout, now
