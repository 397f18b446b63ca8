"""Only root reaches a lab on this machine: an nftables table in the machine's namespace
rejects every packet that another user's socket sends out of the lab's management link.

Why: the management link puts the lab's addresses on the machine, so any local user could
otherwise talk to what listens there: sshd (key-only), etcd (client certificates), but also
dockerd's gossip port (7946, unauthenticated, opened by Docker's cluster store), the test
containers and anything a scenario starts. chainlab itself runs as root.

The rule matches a packet's socket owner (`meta skuid`): packets without a socket (the
kernel's own answers, forwarded packets) do not match, so nothing between root and the lab
changes. It is keyed by the link's name, so it holds before the link exists and after it is
gone; the lab's down removes it.
"""

from __future__ import annotations

import hashlib
import re
import shutil

from chainlab.local import system as S

#: Every guard table's name starts with this (one table per management link).
TABLE_PREFIX = "chainlab_guard_"


def table_name(root_if: str) -> str:
    """The guard's table for management link `root_if`: an nft identifier, one per link
    (the hash keeps two links whose names differ only in punctuation apart)."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", root_if)
    return f"{TABLE_PREFIX}{readable}_{hashlib.sha256(root_if.encode()).hexdigest()[:8]}"


def ruleset(root_if: str) -> str:
    """The guard as an `nft -f` script that replaces any earlier one in one transaction."""
    table = table_name(root_if)
    link = root_if.replace('"', "")  # an interface name has no quote; kept out of the script anyway
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f'    oifname "{link}" meta skuid != 0 counter reject'
        ' comment "chainlab: the lab is root\'s only"\n'
        "  }\n"
        "}\n"
    )


def ensure(root_if: str) -> None:
    """Install (or renew) the guard of management link `root_if`."""
    S.run(["nft", "-f", "-"], input=ruleset(root_if))


def installed(root_if: str) -> bool:
    """Whether the guard of management link `root_if` is in place (without nft there is
    none: a lab that an earlier chainlab brought up has none to take down)."""
    if shutil.which("nft") is None:
        return False
    return bool(S.run(["nft", "list", "table", "inet", table_name(root_if)], check=False).strip())


def remove(root_if: str) -> None:
    """Remove the guard of management link `root_if`, if there is one."""
    if installed(root_if):
        S.run(["nft", "delete", "table", "inet", table_name(root_if)])
