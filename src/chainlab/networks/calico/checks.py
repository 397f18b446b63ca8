"""Read-only checks that a host is a working Calico 2.x node for Docker (pure builders + parsing)."""

from __future__ import annotations

import shlex

from chainlab.provision import commands as C

DRIVERS = ("calico", "calico-ipam")
#: Where dockerd's legacy plugin discovery looks, in its order.
DISCOVERY = ("/run/docker/plugins/{}.sock", "/etc/docker/plugins/{}.spec", "/etc/docker/plugins/{}.json",
             "/usr/lib/docker/plugins/{}.spec", "/usr/lib/docker/plugins/{}.json")


def drivers_argv() -> list[str]:
    """Print `DRIVER=PATH` for each driver dockerd can discover (`DRIVER=` when none)."""
    parts = []
    for driver in DRIVERS:
        paths = " ".join(shlex.quote(p.format(driver)) for p in DISCOVERY)
        parts.append(f'f=; for p in {paths}; do if [ -S "$p" ] || [ -f "$p" ]; then f=$p; break; fi; done; '
                     f'echo {shlex.quote(driver)}="$f"')
    return C.sh("; ".join(parts))


def missing_drivers(output: str) -> list[str]:
    found = {}
    for row in output.splitlines():
        name, sep, path = row.partition("=")
        if sep:
            found[name.strip()] = path.strip()
    return [d for d in DRIVERS if not found.get(d)]
