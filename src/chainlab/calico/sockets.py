"""Where the libnetwork plugin's sockets are: what dockerd discovers, and what provisioning
waits for and cleans up (no etcd, no HTTP server here)."""

from __future__ import annotations

from pathlib import Path

#: The plugin API's names of the two drivers (`Plugin.Activate` answers with one).
NETWORK_DRIVER = "NetworkDriver"
IPAM_DRIVER = "IpamDriver"
PLUGIN_DIR = "/run/docker/plugins"
#: socket name → the driver it serves
SOCKETS = {"calico": NETWORK_DRIVER, "calico-ipam": IPAM_DRIVER}


def socket_paths(directory: str = PLUGIN_DIR) -> list[Path]:
    return [Path(directory) / f"{name}.sock" for name in SOCKETS]
