"""A remote command that did not finish in time: one error for every way chainlab reaches a
host (its own SSH connection, a kept one), in a module that loads no SSH library (a warm `lab
up` reads its hosts on kept connections and never needs fabric)."""

from __future__ import annotations

from chainlab.errors import ChainlabError


class RemoteTimeout(ChainlabError):
    """A remote command did not finish within its timeout (the session was closed)."""

    @classmethod
    def of(cls, host: str, line: str, seconds: float) -> RemoteTimeout:
        return cls(f"{host}: `{line}` did not finish within {seconds:g} s")
