"""The test image: a Dockerfile rendered from the inventory's Jinja2 template, or a tarball."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chainlab.errors import ChainlabError, InputError, Problem
from chainlab.files import check_input_file, read_regular_file
from chainlab.inventory import Inventory
from chainlab.providers import Provider

#: A Dockerfile template larger than this is no Dockerfile.
MAX_DOCKERFILE_BYTES = 1 << 20
#: What the reference Dockerfile installs on top of its base (nginx).
PACKAGES = ("iputils-ping", "iproute2", "wget")
REPO_ROOT = Path(__file__).resolve().parents[3]
#: Dockerfile-style instructions applied by `docker import` to a root filesystem.
ROOTFS_CHANGES = [
    "ENV PATH=/bin",
    "WORKDIR /",
    "EXPOSE 80",
    'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]',
]


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
        data = read_regular_file(path, MAX_DOCKERFILE_BYTES)
        try:
            template = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError([Problem(str(path), "", f"image.dockerfile: not UTF-8 text (byte {exc.start})")]) from None
    import jinja2
    import jinja2.sandbox

    # sandboxed: the template is the user's, and even `lab up --check` renders it; it may use
    # its variables and filters, never reach Python's objects (`cycler.__init__.__globals__`)
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                                       autoescape=False, trim_blocks=True)
    try:
        return env.from_string(template).render(lab=inv.lab, base=inv.image.base, packages=list(PACKAGES))
    except jinja2.TemplateError as exc:  # SecurityError among them
        raise ChainlabError(f"image.dockerfile: {exc}") from None


def tarball_path(inv: Inventory, provider: Provider) -> Path:
    """`image.tarball` if set, else the provider's own (the local lab builds a busybox rootfs)."""
    if inv.image.tarball:
        return check_input_file(Path(inv.image.tarball).expanduser(), "image.tarball")
    default = provider.default_image_tarball()
    if default is None:
        raise ChainlabError("image.source is tarball but image.tarball is not set")
    return default


def load_words(tarball: Path) -> str:
    """How the tarball goes in, as a docker command: `docker load -i` or `docker import`."""
    return "docker load -i" if tarball.exists() and is_docker_save(tarball) else "docker import"


def load_tarball(provider: Provider, client: Any, tarball: Path, name: str) -> str:
    """Load (a `docker save` archive) or import (a rootfs) the tarball as `name`; its image id."""
    if not tarball.exists():
        if provider.default_image_tarball() != tarball:
            raise ChainlabError(f"image tarball {tarball} does not exist")
        provider.make_default_image_tarball(tarball)
    if is_docker_save(tarball):
        with tarball.open("rb") as fh:
            loaded = client.images.load(fh)
        if name not in loaded[0].tags:
            loaded[0].tag(name)
        return str(loaded[0].id)
    return import_rootfs(client, tarball, name)


def import_rootfs(client: Any, tarball: Path, name: str) -> str:
    """`docker import` a root filesystem tarball as `name` (with a PATH and `httpd` on port 80
    as its command: the busybox rootfs has no image config of its own); its image id."""
    repository, _, tag = name.partition(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag or "latest",
                                      changes=ROOTFS_CHANGES)
    return str(client.images.get(f"{repository}:{tag or 'latest'}").id)


def is_docker_save(path: Path) -> bool:
    """A `docker save` archive (loaded as is) rather than a rootfs (imported)."""
    import tarfile

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
