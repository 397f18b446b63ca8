"""python-etcd, imported without loading dnspython: `from chainlab.calico.etcdlib import etcd`.

python-etcd 0.4.5 imports `dns.resolver` at the top of its client module, for one feature:
finding etcd through DNS SRV records (`Client(srv_domain=...)`), which chainlab never uses.
dnspython's resolver is the largest part of importing python-etcd (~45 ms of a warm
`lab up` that takes well under a second). A stand-in module takes its place in sys.modules
while python-etcd is imported: python-etcd's `import dns.resolver` binds it, and the first
use of one of its names (which never comes) imports the real resolver in its place.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _OnFirstUse(types.ModuleType):
    """A module that becomes the real one when one of its names is first looked up.

    (importlib's LazyLoader cannot serve here: the import statement itself reads the
    module's `__spec__`, which makes a LazyLoader module load.)"""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        parent, _, child = self.__name__.rpartition(".")
        setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


def _stand_in(name: str) -> None:
    """Module `name` in sys.modules as an _OnFirstUse (if not imported yet and installed)."""
    parent, _, child = name.rpartition(".")
    try:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            return
    except ImportError:  # its package is not installed either: python-etcd's own import says so
        return
    module = _OnFirstUse(name)
    sys.modules[name] = module
    setattr(sys.modules[parent], child, module)  # as a real import does: dns.resolver is an attribute of dns


_stand_in("dns.resolver")

import etcd  # noqa: E402  (after the stand-in is in place)

__all__ = ["etcd"]
