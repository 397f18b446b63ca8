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


def inspect_argv(images: Sequence[str] = (), containers: Sequence[str] = (), networks: Sequence[str] = (),
                 socket: str = SOCKET) -> list[str]:
    """A read-only probe printing each object's Engine API JSON (a missing one prints a message
    object, which `parse` skips). curl asks the default socket for each object by its kind;
    where the CLI may talk to another daemon (DOCKER_HOST, DOCKER_CONTEXT, any docker context
    in the user's docker config), the socket is not there, or curl is missing or fails (what
    it printed is then dropped), `docker inspect` of every name answers instead; a dockerd
    that does not answer within ANSWER_WITHIN_S ends it with a status in NOT_ANSWERED."""
    urls = [*(f"http://docker/images/{n}/json" for n in images), *(f"http://docker/containers/{n}/json" for n in containers),
            *(f"http://docker/networks/{n}" for n in networks)]
    sock = shlex.quote(socket)
    return sh(f'if [ -z "${{DOCKER_HOST:-}}${{DOCKER_CONTEXT:-}}" ]'
              f' && [ ! -e "${{DOCKER_CONFIG:-$HOME/.docker}}/contexts/meta" ]'
              f" && [ -S {sock} ] && command -v curl >/dev/null 2>&1; then"
              f" o=$(curl -sS -m {ANSWER_WITHIN_S} --path-as-is --unix-socket {sock} {command_line(urls)})"
              f' && {{ printf "%s\\n" "$o"; exit 0; }};'
              f" [ $? -eq {CURL_TIMED_OUT} ] && exit {CURL_TIMED_OUT}; fi;"  # no answer: docker inspect would get none
              f" exec timeout {ANSWER_WITHIN_S} {command_line(['docker', 'inspect', *images, *containers, *networks])}")


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
