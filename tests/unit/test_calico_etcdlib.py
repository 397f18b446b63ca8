"""python-etcd imported without running dnspython's resolver (chainlab.calico.etcdlib), each
case in a fresh interpreter: what is imported is the point."""

from __future__ import annotations

import subprocess
import sys

import pytest

PRELUDE = "import sys, importlib.util\nfrom chainlab.calico.etcdlib import etcd\nresolver = sys.modules['dns.resolver']\n"


def _run(code: str) -> None:
    out = subprocess.run([sys.executable, "-c", PRELUDE + code + "\nprint('ok')\n"], capture_output=True, text=True)
    assert out.stdout == "ok\n", out.stderr


def test_python_etcd_binds_the_resolver_without_running_it() -> None:
    _run("assert type(resolver).__name__ == '_NotRunYet'\n"
         "assert etcd.Client and sys.modules['dns'].resolver is resolver\n"
         "assert importlib.util.find_spec('dns.resolver') is resolver.__spec__  # what others ask of it: no run\n"
         "assert resolver.__file__.endswith('resolver.py') and type(resolver).__name__ == '_NotRunYet'\n")


@pytest.mark.parametrize("use", [
    "assert callable(resolver.Resolver)",  # a name read
    "resolver.default_resolver = 'mine'\nassert resolver.default_resolver == 'mine'",  # set before it ran: kept
    "from dns import resolver as bound\nassert callable(bound.Resolver) and bound is resolver",
])
def test_the_resolver_runs_in_place_on_first_use(use: str) -> None:
    _run(use + "\nassert type(resolver) is type(sys) and sys.modules['dns.resolver'] is resolver\n")


def test_first_use_from_many_threads_runs_it_once() -> None:
    _run("import threading\n"
         "got = []\n"
         "threads = [threading.Thread(target=lambda: got.append(resolver.Resolver)) for _ in range(8)]\n"
         "[t.start() for t in threads]; [t.join() for t in threads]\n"
         "assert len(got) == 8 and len(set(got)) == 1 and sys.modules['dns.resolver'] is resolver\n")
