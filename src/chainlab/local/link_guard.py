"""Only root's sockets reach a lab on this machine: an nftables table in the machine's
namespace rejects every packet that another user's socket sends out of the lab's management
link, and drops what the machine would forward through it.

Why: the management link puts the lab's addresses on the machine, so any local user could
otherwise connect to what listens there: sshd (key-only), etcd (client certificates), but
also dockerd's gossip port (7946, unauthenticated, opened by Docker's cluster store), the
test containers and anything a scenario starts; and a container or VM of the machine's own
could, were the machine to forward. chainlab itself runs as root, and nothing of the lab is
forwarded by the machine (its hosts have no route beyond the lab).

Output: the rule matches a packet's socket owner (`meta skuid`); packets without a socket
(the kernel's own answers) do not match. A TCP connect is answered with a reset, so it is
refused at once (over IPv6 too, where an ICMP error would leave it waiting). The table is
keyed by the link's name, so it holds before the link exists and after it is gone; the
lab's down removes it. An nftables reload (`flush ruleset`, as Debian's nftables.conf
starts) removes it too: `lab up` puts it back, saying so.
"""

from __future__ import annotations

import shutil
import subprocess

from chainlab.errors import ChainlabError
from chainlab.local.system import SYSTEM_PATH

#: Every guard table's name starts with this (one table per management link).
TABLE_PREFIX = "chainlab_guard_"


def table_name(root_if: str) -> str:
    """The guard's table for management link `root_if` (`cl-<lab>`, `_` for `-`: a name
    of underscores, as nftables' own tables are named)."""
    return TABLE_PREFIX + root_if.replace("-", "_")


def ruleset(root_if: str) -> str:
    """The guard as an `nft -f` script that replaces any earlier one in one transaction."""
    table = table_name(root_if)
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f'    oifname "{root_if}" meta skuid != 0 meta l4proto tcp counter reject with tcp reset\n'
        f'    oifname "{root_if}" meta skuid != 0 counter reject\n'
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f'    iifname "{root_if}" counter drop\n'
        f'    oifname "{root_if}" counter drop\n'
        "  }\n"
        "}\n"
    )


def ensure(root_if: str) -> None:
    """Install (or renew) the guard of management link `root_if`."""
    _nft(["-f", "-"], ruleset(root_if))


def installed(root_if: str) -> bool:
    """Whether the guard of management link `root_if` is in place (without nft, none can be)."""
    return available() and _nft(["list", "table", "inet", table_name(root_if)], check=False) is not None


def status_line(root_if: str) -> str:
    """What `local status` / `vm status` say of the guard (rich markup)."""
    table = table_name(root_if)
    if installed(root_if):
        return f"other users' sockets kept off the lab (nftables table inet {table})"
    return (f"[red]other users are NOT kept off the lab[/red]: nftables table inet {table} is missing"
            " (`chainlab lab up` puts it back)")


def remove(root_if: str) -> None:
    """Remove the guard of management link `root_if`, if there is one."""
    if not available():  # without nft there is none
        return
    if _nft(["delete", "table", "inet", table_name(root_if)], check=False) is None and installed(root_if):
        raise ChainlabError(f"could not remove nftables table inet {table_name(root_if)}: remove it by hand"
                            f" (nft delete table inet {table_name(root_if)})")


def available() -> bool:
    """Whether the nft command is there (where the lab's preflight looks for it)."""
    return _nft_command() is not None


def _nft_command() -> str | None:
    """nft where the lab's preflight looks for it, whatever PATH the caller has."""
    return shutil.which("nft", path=SYSTEM_PATH)


def _nft(args: list[str], script: str | None = None, check: bool = True) -> str | None:
    """`nft ARGS`: its output, or None when it failed and not `check`."""
    nft = _nft_command()
    if nft is None:
        raise ChainlabError("the nft command is missing (Debian package nftables): run `make local-deps`")
    done = subprocess.run([nft, *args], input=script, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    if check:
        detail = done.stderr.strip().splitlines()
        raise ChainlabError(f"nft {' '.join(args)} failed" + (f": {detail[-1]}" if detail else ""))
    return None
