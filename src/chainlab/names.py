"""The pydantic types of names that end up in remote commands (their patterns: patterns.py).

Inventory values are data: anything that reaches a shell is first checked here and
then quoted with shlex.quote anyway.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from chainlab.patterns import ABS_PATH, CONTAINER_NAME, HOST_NAME, IMAGE_NAME, NETWORK_NAME, USER_NAME

HostName = Annotated[str, StringConstraints(pattern=HOST_NAME)]
ContainerName = Annotated[str, StringConstraints(pattern=CONTAINER_NAME)]
NetworkName = Annotated[str, StringConstraints(pattern=NETWORK_NAME)]
ImageName = Annotated[str, StringConstraints(pattern=IMAGE_NAME)]
UserName = Annotated[str, StringConstraints(pattern=USER_NAME)]


def _no_parent_steps(path: str) -> str:
    """`..` would let a path that looks like /var/lib/x name / itself (and `down` removes it)."""
    if ".." in path.split("/"):
        raise ValueError("expected a path without '..' steps")
    return path


SafePath = Annotated[str, StringConstraints(pattern=ABS_PATH), AfterValidator(_no_parent_steps)]
