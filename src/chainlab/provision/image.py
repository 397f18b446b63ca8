"""The test image: a Dockerfile rendered from the inventory's Jinja2 template, or a tarball."""

from __future__ import annotations

import tarfile
from pathlib import Path

import jinja2

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory

#: What the reference Dockerfile installs on top of its base (nginx).
PACKAGES = ("iputils-ping", "iproute2", "wget")
REPO_ROOT = Path(__file__).resolve().parents[3]


def dockerfile_path(inv: Inventory, base: Path | None = None) -> Path:
    path = Path(inv.image.dockerfile)
    if not path.is_absolute():
        cwd_path = (base or Path.cwd()) / path
        path = cwd_path if cwd_path.exists() else REPO_ROOT / path
    return path


def render_dockerfile(inv: Inventory, template: str | None = None) -> str:
    """The Dockerfile text; only validated values (lab name, base image) come from the inventory."""
    if template is None:
        path = dockerfile_path(inv)
        try:
            template = path.read_text()
        except OSError as exc:
            raise ChainlabError(f"image.dockerfile {path}: {exc.strerror}") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
                            trim_blocks=True)
    try:
        return env.from_string(template).render(lab=inv.lab, base=inv.image.base, packages=list(PACKAGES))
    except jinja2.TemplateError as exc:
        raise ChainlabError(f"image.dockerfile: {exc}") from None


def tarball_path(inv: Inventory) -> Path:
    """`image.tarball` if set, else the local lab's rootfs tarball, or the VM image's."""
    if inv.image.tarball:
        return Path(inv.image.tarball).expanduser()
    if inv.provider == "local":
        from chainlab.local import plan_lab

        return plan_lab(inv).image_tarball
    if inv.provider == "qemu":
        from chainlab.vm.plan import plan_vm_lab

        return plan_vm_lab(inv).image.busybox_tarball
    raise ChainlabError("image.source is tarball but image.tarball is not set")


def is_docker_save(path: Path) -> bool:
    """A `docker save` archive (loaded as is) rather than a rootfs (imported)."""
    try:
        with tarfile.open(path) as tar:
            for index, member in enumerate(tar):
                if member.name in ("manifest.json", "./manifest.json"):
                    return True
                if index > 64:
                    break
            return False
    except (OSError, tarfile.TarError):
        return False
