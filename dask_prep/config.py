"""dask-prep's defaults as a section of Dask's configuration.

``dask-prep.yaml`` (beside this module) is registered with
``dask.config.update_defaults`` when this module is imported, the way Dask's
downstream libraries do, so that a YAML file in ``~/.config/dask`` or a
``DASK_DASK_PREP__SHARD_SIZE=50000`` variable sets a default for the command
line and for Python alike. Precedence: an explicit argument, then a ``--config``
file (the CLI), then dask config, then the shipped default.

>>> from dask_prep import config
>>> config.get("shard-size")
10000
>>> import dask
>>> with dask.config.set({"dask-prep.shard-size": 500}):
...     config.get("shard-size")
500
>>> config.source("shard-size")
'dask config dask-prep.shard-size (DASK_DASK_PREP__SHARD_SIZE)'
"""
from __future__ import annotations

import os

import dask
import yaml

__all__ = ["get", "source", "DEFAULTS_FILE"]

#: The shipped defaults.
DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "dask-prep.yaml")

with open(DEFAULTS_FILE, encoding="utf-8") as _f:
    _DEFAULTS = yaml.safe_load(_f)

dask.config.update_defaults(_DEFAULTS)


def get(key: str):
    """The value of ``dask-prep.<key>`` (``key`` as in ``dask-prep.yaml``)."""
    return dask.config.get(f"dask-prep.{key}", _DEFAULTS["dask-prep"][key])


def source(key: str) -> str:
    """Where a user sets ``key``, for error messages."""
    return f"dask config dask-prep.{key} (DASK_DASK_PREP__{key.upper().replace('-', '_')})"
