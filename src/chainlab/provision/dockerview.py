"""What a host's dockerd has, from one `docker inspect` of every object lab up looks at (pure).

One docker CLI call per host (images, containers and networks at once) instead of one per
object: on the local lab, every host's docker start-up costs this machine's CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def inspect_argv(names: list[str]) -> list[str]:
    """`docker inspect` of every name (exit 1 when one is missing; the others are still printed)."""
    return ["docker", "inspect", *names]


@dataclass
class DockerView:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # by repo:tag and by repo
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name

    @classmethod
    def parse(cls, text: str) -> "DockerView":
        view = cls()
        try:
            objects = json.loads(text or "[]")
        except ValueError:
            return view
        for obj in objects if isinstance(objects, list) else []:
            if not isinstance(obj, dict):
                continue
            if "RepoTags" in obj:
                for tag in obj.get("RepoTags") or []:
                    view.images[tag] = obj
                    if tag.endswith(":latest"):
                        view.images[tag[: -len(":latest")]] = obj
            elif "State" in obj and isinstance(obj.get("Name"), str):
                view.containers[obj["Name"].lstrip("/")] = obj
            elif "IPAM" in obj and isinstance(obj.get("Name"), str):
                view.networks[obj["Name"]] = obj
        return view
