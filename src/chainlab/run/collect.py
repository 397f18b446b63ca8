"""Exactly the log bytes a probe produced on each node: mark the end before, read after.

A mark is (inode, size). If the file was rotated (new inode) or truncated, the slice is
the whole new file. Each read is one SSH round trip (SLICE_SCRIPT).
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


#: sh -c SLICE_SCRIPT sh PATH INODE SIZE → "inode size" (or "none") and the new bytes:
#: from SIZE when the file is the same inode and did not shrink, else from the start.
SLICE_SCRIPT = (
    'st=$(stat -c "%i %s" -- "$1" 2>/dev/null) || { echo none; exit 0; }; '
    'set -- "$@" $st; echo "$4 $5"; '
    'if [ "$4" = "$2" ] && [ "$5" -ge "$3" ]; then start=$3; else start=0; fi; '
    'tail -c +$((start + 1)) -- "$1" | head -c $(($5 - start))'
)


def read_slice(conn: fabric.Connection, path: str, before: LogMark) -> tuple[str, LogMark]:
    """New text since `before` (up to the current end), and the current mark: one round trip."""
    out = run(conn, slice_argv(path, before)).stdout
    return parse_slice(out)


def slice_argv(path: str, before: LogMark) -> list[str]:
    inode = "-" if before.inode is None else str(before.inode)
    return ["sh", "-c", SLICE_SCRIPT, "sh", path, inode, str(before.size)]


def parse_slice(out: str) -> tuple[str, LogMark]:
    head, _, text = out.partition("\n")
    if head == "none":
        return "", LogMark(None, 0)
    ino, size = head.split()
    return text, LogMark(int(ino), int(size))
