"""python-etcd, imported without running dnspython's resolver: `from chainlab.calico.etcdlib import etcd`.

python-etcd 0.4.5 imports `dns.resolver` at the top of its client module, for one feature:
finding etcd through DNS SRV records (`Client(srv_domain=...)`), which chainlab never uses.
Running dnspython's resolver module is the largest part of importing python-etcd (~40 ms of
CPU). Here it is registered before python-etcd is imported as a module that is not run yet:
python-etcd's `import dns.resolver` binds it, and it runs, in place, the first time one of
its names is read or set (which never comes in chainlab).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

_LOAD_LOCK = threading.RLock()
_RUNNING: set[str] = set()  # modules whose code runs now (its own reads then see it partial)


class _NotRunYet(types.ModuleType):
    """A module whose code runs on the first read of a name it does not have yet, or on the
    first write.

    It carries its real spec, file and loader from the start (`find_spec`, `inspect` and the
    import statement read those without running it). Running it makes it a plain module, the
    same object (`from dns import resolver` holds the real one then); other threads wait for
    that. (importlib's LazyLoader cannot serve: the import statement itself reads a module's
    `__spec__`, which makes a LazyLoader module run.)"""

    def _run(self) -> None:
        with _LOAD_LOCK:
            if type(self) is not _NotRunYet or self.__name__ in _RUNNING:
                return  # ran meanwhile in another thread, or its own code asks while it runs
            _RUNNING.add(self.__name__)
            try:
                self.__spec__.loader.exec_module(self)  # type: ignore[union-attr]
            except BaseException:
                sys.modules.pop(self.__name__, None)  # as a failed import leaves it
                raise
            finally:
                _RUNNING.discard(self.__name__)
            types.ModuleType.__setattr__(self, "__class__", types.ModuleType)

    def __getattr__(self, attr: str) -> Any:
        self._run()
        if type(self) is _NotRunYet:  # its own code, while it runs: not there yet
            raise AttributeError(f"partially initialized module {self.__name__!r} has no attribute {attr!r}")
        return getattr(self, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        self._run()  # a value set now must not be overwritten by the module's own code later
        types.ModuleType.__setattr__(self, attr, value)


def _register_not_run(name: str) -> None:
    """Module `name` in sys.modules as a _NotRunYet (if it is installed and not imported yet)."""
    try:
        spec = None if name in sys.modules else importlib.util.find_spec(name)
    except ImportError:  # its package is not installed either: python-etcd's own import says so
        return
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)  # __spec__, __file__, __loader__ set; not run
    types.ModuleType.__setattr__(module, "__class__", _NotRunYet)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)  # as an import does: dns.resolver is an attribute of dns


_register_not_run("dns.resolver")

import etcd  # noqa: E402  (after the resolver is registered)

__all__ = ["etcd"]
