"""The lab state file: what provisioning set up, for scenario runs to read.

Provisioning (`lab up`) writes it; `run`/`nightly` read it; `lab down` removes it.
Local and VM labs keep it in their state dir, SSH labs under ~/.local/state/chainlab/<lab>/.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from chainlab.errors import ChainlabError, NoLabState
from chainlab.files import PRIVATE_FILE, private_dir, write_atomic
from chainlab.inventory import Inventory
from chainlab.names import ContainerName, HostName, NetworkName

#: A Linux interface name (at most 15 characters), as `ip link` shows it.
InterfaceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostState(_Model):
    address: IPv4Address
    trace_log: str = Field(description="path of the host's trace file, on the host")
    trace_backend: Literal["rsyslog", "ulogd", "nft-monitor"]
    iptables: Literal["legacy", "nft"]


class ContainerState(_Model):
    host: HostName
    address: IPv4Address
    network: NetworkName
    driver: Literal["calico", "bridge"]
    interface: InterfaceName | None = Field(None, description="host-side interface (cali... for Calico)")
    published: dict[int, int] = Field(default_factory=dict)


class LabState(_Model):
    lab: HostName
    hosts: dict[HostName, HostState] = Field(default_factory=dict)
    containers: dict[ContainerName, ContainerState] = Field(default_factory=dict)


def state_path(inv: Inventory) -> Path:
    """In the directory the provider keeps the lab's state in (see `Provider.state_dir`)."""
    from chainlab.providers import provider_for

    return provider_for(inv).state_dir() / "lab-state.json"


def user_state_dir(lab: str) -> Path:
    """Labs over SSH: the user's own state dir, ~/.local/state/chainlab/<lab>."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "chainlab" / lab


def load_state(inv: Inventory) -> LabState:
    path = state_path(inv)
    try:
        return LabState.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise NoLabState(f"no lab state at {path}: lab {inv.lab} is not provisioned; run `chainlab lab up` "
                         f"with this inventory (`make lab-up` for the local lab) first") from None
    except (ValueError, ValidationError) as exc:
        raise ChainlabError(f"lab state {path} is unreadable ({exc.__class__.__name__}); re-run lab up") from None


def save_state(inv: Inventory, state: LabState) -> Path:
    """Write atomically (a crash never leaves half a file), readable by its owner only."""
    path = state_path(inv)
    if not path.parent.is_dir():
        private_dir(path.parent)
    return write_atomic(path, state.model_dump_json(indent=1), PRIVATE_FILE)


def remove_state(inv: Inventory) -> None:
    """The lab state and the etcd baseline: lab down is through."""
    state_path(inv).unlink(missing_ok=True)
    _baseline_path(inv).unlink(missing_ok=True)


# --- the etcd tree before lab up (what lab down puts back) ----------------------------

def _baseline_path(inv: Inventory) -> Path:
    return state_path(inv).with_name("etcd-baseline.json")


def save_etcd_baseline(inv: Inventory, keys: set[str]) -> None:
    """The /calico keys present before lab up first touched etcd (written once, atomically)."""
    path = _baseline_path(inv)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"lab": inv.lab, "keys": sorted(keys)}, indent=1))
    tmp.replace(path)


def load_etcd_baseline(inv: Inventory) -> set[str] | None:
    """None if lab up never recorded one (or the record is unreadable)."""
    try:
        data = json.loads(_baseline_path(inv).read_text())
        return {str(k) for k in data["keys"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
