"""What a host's dockerd has, from one look at every object lab up checks (pure).

One process per host (images, containers and networks at once) instead of one per object:
on the local lab, every host's start-up costs this machine's CPU. That process is curl on
dockerd's socket where it can be (~4.5 ms of CPU a call against the docker CLI's ~10.5 ms),
else `docker inspect`; both print the Engine API's own JSON, which `DockerView.parse` reads.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chainlab.provision.commands import sh
from chainlab.shell import command_line

#: The start of the next JSON value: anything but JSON's whitespace.
NEXT_VALUE = re.compile(r"[^ \t\n\r]")
#: Seconds dockerd has to answer the look (a stopped dockerd held up every host's facts).
ANSWER_WITHIN_S = 10
#: curl's exit status when dockerd did not answer within ANSWER_WITHIN_S (timeout(1)'s: 124).
CURL_TIMED_OUT = 28
NOT_ANSWERED = (CURL_TIMED_OUT, 124)
#: Where dockerd listens unless the user pointed the CLI elsewhere.
SOCKET = "/var/run/docker.sock"
#: What `DockerLook.direct_argv` prints where that socket may be asked directly.
DIRECT = "direct"


@dataclass(frozen=True)
class DockerLook:
    """Every Docker object lab up looks at on a host, and the ways to ask dockerd for them."""

    images: Sequence[str] = ()
    containers: Sequence[str] = ()
    networks: Sequence[str] = ()
    socket: str = SOCKET

    def api_paths(self) -> list[str]:
        """The Engine API's path of each object, as curl asks for them."""
        return [*(f"/images/{n}/json" for n in self.images), *(f"/containers/{n}/json" for n in self.containers),
                *(f"/networks/{n}" for n in self.networks)]

    def argv(self) -> list[str]:
        """A read-only probe printing each object's Engine API JSON (a missing one prints a
        message object, which `DockerView.parse` skips). curl asks the default socket for each
        object by its kind where `direct_argv` would say `direct` and curl is there; else, or
        if curl fails (what it printed is then dropped), `docker inspect` of every name
        answers instead; a dockerd that does not answer within ANSWER_WITHIN_S ends it with a
        status in NOT_ANSWERED."""
        urls = [f"http://docker{path}" for path in self.api_paths()]
        return sh(f"if {self._direct_test()} && command -v curl >/dev/null 2>&1; then"
                  f" o=$(curl -sS -m {ANSWER_WITHIN_S} --path-as-is --unix-socket {shlex.quote(self.socket)}"
                  f" {command_line(urls)})"
                  f' && {{ printf "%s\\n" "$o"; exit 0; }};'
                  f" [ $? -eq {CURL_TIMED_OUT} ] && exit {CURL_TIMED_OUT}; fi;"  # no answer: docker inspect would get none
                  f" exec timeout {ANSWER_WITHIN_S} "
                  f"{command_line(['docker', 'inspect', *self.images, *self.containers, *self.networks])}")

    def direct_argv(self) -> list[str]:
        """A probe of built-ins printing `direct` where dockerd's default socket is the one
        the docker CLI would talk to: not where the user pointed it elsewhere (DOCKER_HOST,
        DOCKER_CONTEXT, any docker context in the user's docker config), nor without the socket."""
        return sh(f"if {self._direct_test()}; then echo {DIRECT}; fi")

    def _direct_test(self) -> str:
        return (f'[ -z "${{DOCKER_HOST:-}}${{DOCKER_CONTEXT:-}}" ] && [ ! -e "${{DOCKER_CONFIG:-$HOME/.docker}}/contexts/meta" ]'
                f" && [ -S {shlex.quote(self.socket)} ]")


def inspect_argv(images: Sequence[str] = (), containers: Sequence[str] = (), networks: Sequence[str] = (),
                 socket: str = SOCKET) -> list[str]:
    """`DockerLook(...).argv()`: the one probe of these objects."""
    return DockerLook(images, containers, networks, socket).argv()


@dataclass
class DockerView:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # by repo:tag and by repo
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name

    @classmethod
    def parse(cls, text: str) -> "DockerView":
        """`docker inspect`'s list, or the objects curl printed one after another."""
        view = cls()
        objects: list[Any] = []
        decoder, at = json.JSONDecoder(), 0
        while (start := NEXT_VALUE.search(text, at)) is not None:
            at = start.start()
            try:
                value, at = decoder.raw_decode(text, at)
            except ValueError:  # damage, or a daemon's plain-text error: go on at the next line
                end = text.find("\n", at)
                at = len(text) if end < 0 else end + 1
                continue
            objects.extend(value if isinstance(value, list) else [value])
        for obj in objects:
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
