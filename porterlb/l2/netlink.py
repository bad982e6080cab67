"""pyroute2's rtnetlink client, loaded without the rest of pyroute2.

``import pyroute2`` runs the package's ``__init__``, which imports all of the library (IPDB,
NDB with sqlite3, conntrack, nftables, IPVS, WireGuard, nl80211, plan9...): 163 modules, ~6 MB
of a speaker's RSS (``python -X importtime``, bench/speaker_scale.py), for the one class
:mod:`porterlb.l2.interfaces` uses. Python runs a package's ``__init__`` before any of its
submodules, so this module registers the package without running it: ``pyroute2`` enters
``sys.modules`` as its own spec builds it (its ``__path__`` finds the submodules), and only
``pyroute2.iproute.linux`` (``AsyncIPRoute``) and ``pyroute2.netlink.exceptions`` load, with
what they import.

Nothing else in the process loses anything by it: the first time something asks the
package for a name it does not hold yet (``pyroute2.IPRoute``, ``from pyroute2 import NDB``;
PEP 562 ``__getattr__``), a submodule of that name is imported, or else the package's
``__init__`` runs in full. The lab and the tests, which import ``pyroute2`` beside the speaker's
code, see the whole library. Had the whole package been imported first, it is used as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

PACKAGE = "pyroute2"


def _package_without_init(name: str) -> None:
    """Register the package `name` in ``sys.modules`` without running its ``__init__`` until
    something asks it for a name it does not hold."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package", name=name)
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)

    def complete(attribute: str) -> Any:
        submodule = f"{name}.{attribute}"
        if attribute.isidentifier() and importlib.util.find_spec(submodule) is not None:
            return importlib.import_module(submodule)  # `from pyroute2 import config`
        del vars(package)["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attribute)

    vars(package)["__getattr__"] = complete
    sys.modules[name] = package


_package_without_init(PACKAGE)

# Only now, with the package registered: each loads itself and what it imports.
from pyroute2.iproute import linux  # noqa: E402
from pyroute2.netlink import exceptions  # noqa: E402

AsyncIPRoute: Any = linux.AsyncIPRoute
"""The asyncio rtnetlink client (links, addresses, routes; ``groups`` for events)."""
NetlinkError: type[Exception] = exceptions.NetlinkError
"""What the kernel's netlink errors are raised as (``code`` is the errno)."""
