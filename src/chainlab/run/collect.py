"""Exactly the log bytes a probe produced on each node: mark the end before, read after.

A mark is the file's inode, size and a checksum of the (up to) 64 bytes before that size,
all of the file the path names (symlinks followed). Reading from the mark:
- same inode, not shorter, same bytes before the mark: the bytes after the mark;
- same inode but shorter, or other bytes before the mark (truncated in place, e.g.
  logrotate's copytruncate, and maybe grown again): the whole file, and the run says the
  node's evidence may be incomplete (what came before the truncation is gone);
- another inode (renamed away and recreated): what the old file (found by its inode next
  to the path) got after the mark, then the whole new file (the old file gone: incomplete).
Each mark (with the run's rule and route snapshot) and each read is one SSH round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import fabric

from chainlab.remote import run


@dataclass(frozen=True)
class LogMark:
    inode: int | None
    size: int
    tail_sum: str = ""


#: sh -c MARK_SCRIPT sh PATH → one line: "inode size checksum", or empty if PATH is missing.
#: It never exits, so a caller may run more commands after it in the same script.
MARK_SCRIPT = (
    'if st=$(stat -L -c "%i %s" -- "$1" 2>/dev/null); then set -- "$1" $st; '
    'n=$(( $3 > 64 ? 64 : $3 )); '
    'echo "$2 $3 $(tail -c +$(($3 - n + 1)) -- "$1" | head -c $n | cksum | cut -d" " -f1)"; '
    'else echo; fi'
)

#: sh -c SLICE_SCRIPT sh PATH INODE SIZE CHECKSUM → "inode size how" (or "none") and the
#: text produced since the mark (see the module docstring). `how`: after (the mark held),
#: new (no file at the mark), truncated (same inode, shorter or other bytes before the mark),
#: rotated (another inode; the old file found by its inode), lost (the old file is gone).
SLICE_SCRIPT = (
    'st=$(stat -L -c "%i %s" -- "$1" 2>/dev/null) || { echo none; exit 0; }; '
    'set -- "$@" $st; start=0; how=new; old=; '
    'if [ "$5" = "$2" ]; then how=truncated; '
    'if [ "$6" -ge "$3" ]; then '
    'n=$(( $3 > 64 ? 64 : $3 )); '
    's=$(tail -c +$(($3 - n + 1)) -- "$1" | head -c $n | cksum | cut -d" " -f1); '
    'if [ "$s" = "$4" ]; then start=$3; how=after; fi; '
    'fi; '
    'elif [ "$2" != - ]; then how=lost; '
    'old=$(find "$(dirname -- "$1")" -maxdepth 1 -type f -inum "$2" 2>/dev/null | head -n 1); '
    'if [ -n "$old" ]; then how=rotated; fi; '
    'fi; '
    'echo "$5 $6 $how"; '
    'if [ -n "$old" ]; then tail -c +$(($3 + 1)) -- "$old"; fi; '
    'tail -c +$((start + 1)) -- "$1" | head -c $(($6 - start))'
)
#: How a read may have missed some of what was written since the mark.
INCOMPLETE = {"truncated": "truncated in place (logrotate's copytruncate?)",
              "lost": "renamed away and the old file is gone"}


def mark_argv(path: str, then: str = "") -> list[str]:
    """Mark the end of `path`, then run the shell commands `then` (constant text) in the
    same round trip; the mark is the output's first line."""
    return ["sh", "-c", f"{MARK_SCRIPT}; {then}" if then else MARK_SCRIPT, "sh", path]


def parse_mark(line: str) -> LogMark:
    """The mark from MARK_SCRIPT's line (a missing file is empty)."""
    fields = line.split()
    if len(fields) != 3:
        return LogMark(None, 0)
    return LogMark(int(fields[0]), int(fields[1]), fields[2])


def read_slice(conn: fabric.Connection, path: str, before: LogMark) -> tuple[str, LogMark, str]:
    """New text since `before` (up to the current end), the current mark and how the file
    went since (SLICE_SCRIPT's `how`): one round trip."""
    return parse_slice(run(conn, slice_argv(path, before)).stdout, before)


def slice_argv(path: str, before: LogMark) -> list[str]:
    inode = "-" if before.inode is None else str(before.inode)
    return ["sh", "-c", SLICE_SCRIPT, "sh", path, inode, str(before.size), before.tail_sum or "-"]


def parse_slice(out: str, before: LogMark) -> tuple[str, LogMark, str]:
    head, _, text = out.partition("\n")
    if head == "none":  # no file now: gone since the mark, or never there
        return "", LogMark(None, 0), "new" if before.inode is None else "lost"
    ino, size, how = head.split()
    return text, LogMark(int(ino), int(size)), how
