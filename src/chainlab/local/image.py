"""The offline test image `mybusybox`: a busybox-static rootfs, imported with `docker import`.

No registry is reachable from the lab, so the reference Dockerfile (`FROM nginx` + ping,
iproute2, wget) is replaced by busybox, which has all four (`httpd` plays nginx).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from chainlab.local.system import run

BUSYBOX = Path("/bin/busybox")
INDEX_HTML = b"<html><body><h1>chainlab mybusybox</h1></body></html>\n"
ETC_FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": b"127.0.0.1 localhost\n",
}


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def build_image_tarball(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Write the rootfs tarball for `mybusybox` to `dest` (atomically) and return it."""
    applets = sorted(set(run([str(busybox), "--list"]).split()) - {"busybox"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for d in ("bin", "etc", "www", "tmp", "root", "proc", "sys", "dev", "var", "var/log"):
            _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        for name, data in ETC_FILES.items():
            _add_file(tar, name, data)
        _add_file(tar, "www/index.html", INDEX_HTML)
    os.replace(tmp, dest)
    return dest
