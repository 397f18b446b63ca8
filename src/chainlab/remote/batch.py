"""Many shell commands in one SSH round trip, each answer framed so that none can pass for another.

A `Batch` renders one POSIX sh script and parses what it printed. Each command's answer is
framed by lines carrying a random token chosen for the batch (`@@<token> <i> begin` ...
`@@<token> <i> <status>`): no output can close another's frame, and nothing is re-encoded,
so the framing costs no process of its own. `concurrent` runs the commands at once, each in
a subshell writing to a file of a private temporary directory (probes that wait: pings, TCP
connects), removed however the script ends; otherwise they run one after the other without
a file or an extra process (the read-only probes of provisioning: on the local lab every
host's processes share this machine's CPU).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from chainlab.shell import shell_text


@dataclass(frozen=True)
class Batch:
    commands: tuple[str, ...]
    #: answers hold stderr too (as it came, mixed with stdout)
    stderr: bool = False
    concurrent: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(8))

    @classmethod
    def of(cls, commands: Sequence[str], *, stderr: bool = False, concurrent: bool = False) -> "Batch":
        return cls(tuple(commands), stderr, concurrent)

    @classmethod
    def of_argvs(cls, argvs: Sequence[Sequence[str]]) -> "Batch":
        """Commands run one after the other, each quoted; an `sh -c SCRIPT` runs as SCRIPT in the
        subshell every command gets anyway (no second shell started: one process less)."""
        return cls.of([shell_text(argv) for argv in argvs])

    def script(self) -> str:
        redirect = "2>&1" if self.stderr else "2>/dev/null"
        mark = f"@@{self.token}"
        if not self.concurrent:
            lines = []
            for i, command in enumerate(self.commands):  # `)` on a line of its own: a command may end in a comment
                lines.append(f"printf '{mark} {i} begin\\n'; ( {command}\n) {redirect} </dev/null; "
                             f"printf '\\n{mark} {i} %s\\n' $?")
            return "\n".join(lines) + "\n"
        # the directory goes however the script ends: when the caller went away (Ctrl-C, a
        # deadline), writing the answers meets a closed pipe (SIGPIPE), and a signal that ends
        # a shell skips its EXIT trap unless the signal is trapped too
        lines = ['d=$(mktemp -d) || exit 1', "trap 'rm -rf \"$d\"' EXIT", "trap 'exit 129' HUP INT TERM PIPE"]
        for i, command in enumerate(self.commands):
            lines.append(f'( ( {command} ) >"$d/{i}" {redirect} </dev/null; echo $? >"$d/{i}.rc" ) &')
        lines.append("wait")
        for i in range(len(self.commands)):
            lines.append(f"printf '{mark} {i} begin\\n'; cat \"$d/{i}\"; read rc <\"$d/{i}.rc\"; "
                         f"printf '\\n{mark} {i} %s\\n' \"$rc\"")
        return "\n".join(lines) + "\n"

    def parse(self, text: str) -> dict[int, tuple[int, str]]:
        """Command index → (exit status, output); a command without a whole frame is left out."""
        mark = re.escape(f"@@{self.token}")
        found: dict[int, tuple[int, str]] = {}
        for match in re.finditer(rf"^{mark} (\d+) begin\n(.*?)\n{mark} \1 (\d+)$", text, re.S | re.M):
            index = int(match[1])
            if index < len(self.commands):
                found[index] = (int(match[3]), match[2])
        return found
