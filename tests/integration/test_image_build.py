"""`image.source: build`: the Dockerfile template rendered and built on a host through the
docker SDK over ssh://, on a one-host local lab (lab `buildit`, 10.231.95.0/24).

No registry is reachable, so the FROM image is the lab's busybox rootfs, loaded under
another name first; what is tested is chainlab's build path, not Docker Hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chainlab.inventory import load_inventory
from chainlab.local import plan_lab
from chainlab.provision.image import import_rootfs
from chainlab.remote import docker_client

from . import suite
from .conftest import ROOT

pytestmark = pytest.mark.integration

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
BASE = "chainlab-test-base"
BUILT = "chainlab-built"


def cli(inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)


@pytest.fixture(scope="module")
def build_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the local lab needs root")
    directory = tmp_path_factory.mktemp("build-lab")
    doc = {
        "lab": "buildit", "provider": "local",
        "local": {"lan": "10.231.95.1/24", "state_dir": str(directory / "state")},
        "ssh": {"user": "root"},
        "hosts": {"master": {"address": "10.231.95.195", "roles": ["master"], "os": "debian12", "iptables": "legacy"}},
        "image": {"name": BUILT, "source": "build", "base": BASE,
                  "dockerfile": str(ROOT / "tests" / "fixtures" / "images" / "Dockerfile-on-local-base.j2")},
        "calico": {"network": "bridge", "driver": "bridge"},
        "containers": {"web1": {"host": "master"}},
    }
    inv = directory / "inventory.yaml"
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    suite.register(inv)
    try:
        assert cli(inv, "local", "up").returncode == 0
        client = docker_client(load_inventory(inv), "master")
        try:
            import_rootfs(client, plan_lab(load_inventory(inv)).image_tarball, BASE)
        finally:
            client.close()
        yield inv
    finally:
        cli(inv, "lab", "down")
        cli(inv, "local", "down")


def images(inv: Path) -> dict[str, dict[str, str]]:
    client = docker_client(load_inventory(inv), "master")
    try:
        return {tag.split(":")[0]: image.labels for image in client.images.list() for tag in image.tags}
    finally:
        client.close()


def test_build_then_idempotent_then_removed(build_lab: Path) -> None:
    first = cli(build_lab, "lab", "up")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{BUILT} built from" in first.stdout
    assert images(build_lab)[BUILT].get("chainlab.lab") == "buildit"

    second = cli(build_lab, "lab", "up")
    assert second.returncode == 0 and "master : ok=6 changed=0 failed=0" in second.stdout, second.stdout

    down = cli(build_lab, "lab", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    left = images(build_lab)
    assert BUILT not in left and BASE in left
