"""Shipping the user's own code to the workers: by reference where they can
import it, else by value.

A function or class from a file the workers cannot import (a script next to
the data, a module on the client's path only) is carried as cloudpickle bytes
and loaded once per worker process. Functions defined in ``__main__`` or a
notebook are pickled by value by Dask itself. The caller's cloudpickle
settings are left as they were.

>>> import json
>>> shippable(json.dumps) is json.dumps   # importable everywhere: by reference
True
"""
from __future__ import annotations

import os
import site
import sys
import sysconfig

import cloudpickle

__all__ = ["ByValue", "shippable", "loaded"]


def _installed_roots() -> tuple[str, ...]:
    roots = set(site.getsitepackages() + [site.getusersitepackages()])
    roots.update(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))
    return tuple(os.path.abspath(r) + os.sep for r in roots if r)


def shippable(obj):
    """``obj`` itself if workers can import it, else a :class:`ByValue` carrying it."""
    modname = getattr(obj, "__module__", None) or ""
    module = sys.modules.get(modname)
    if modname == "__main__" or modname.split(".")[0] == "dask_prep":
        return obj
    path = os.path.abspath(getattr(module, "__file__", "") or "")
    if module is None or not path or path.startswith(_installed_roots()):
        return obj
    cloudpickle.register_pickle_by_value(module)
    try:
        payload = cloudpickle.dumps(obj)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    return ByValue(payload, f"{modname}:{getattr(obj, '__qualname__', '')}",
                   getattr(obj, "takes_storage_options", None))


def loaded(obj):
    """The object a :class:`ByValue` carries, or ``obj`` itself."""
    return obj.load() if isinstance(obj, ByValue) else obj


class ByValue:
    """A function or class carried as cloudpickle bytes, loaded once per worker
    process; calling it calls what it carries."""

    def __init__(self, payload: bytes, name: str, takes_storage_options: bool | None = None):
        self.payload, self.name = payload, name
        self.takes_storage_options = takes_storage_options
        self._obj = None

    def __getstate__(self):
        return {"payload": self.payload, "name": self.name,
                "takes_storage_options": self.takes_storage_options}

    def __setstate__(self, state):
        self.__init__(state["payload"], state["name"], state.get("takes_storage_options"))

    def load(self):
        if self._obj is None:
            self._obj = cloudpickle.loads(self.payload)
        return self._obj

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ByValue({self.name})"
