"""A run described in a file (``dask-prep run --config run.toml``) or repeated
from a dataset (``dask-prep run --like OUT``): both give the ``run`` command's
options by their names (``shard-size``, ``suffix``, ``inputs``, ...), which the
CLI uses for every option not given on the command line.

>>> options_of_manifest({"inputs": ["/data/in"], "format": "parquet", "shard_size": 5,
...     "options": {"converter": "lines", "max_decompressed": ["x", 100.0], "suffixes": [".txt"],
...                 "partition_size": None, "on_error": "skip"}})
{'inputs': ['/data/in'], 'format': 'parquet', 'shard-size': 5, 'converter': 'lines', 'max-decompressed': '100x', 'on-error': 'skip', 'suffix': ['.txt']}
"""
from __future__ import annotations

import os

from .paths import is_url

__all__ = ["read_run_file", "options_of_manifest", "options_of_dataset"]

#: Option names whose values are local paths, relative to a run file's folder.
PATH_KEYS = ("inputs", "output", "exclude", "tokenizer", "report", "scheduler-file")


def _load(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    if path.lower().endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        return tomllib.loads(data.decode("utf-8"))
    import yaml
    return yaml.safe_load(data) or {}


def read_run_file(path) -> dict:
    """The options in a TOML (``.toml``) or YAML file, keys normalized to
    ``shard-size`` form, relative paths made relative to the file's folder; a
    file that cannot be read is one-line :class:`ValueError`."""
    path = os.fspath(path)
    try:
        data = _load(path)
    except OSError as exc:
        raise ValueError(f"cannot read the run file {path!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # a TOML or YAML syntax error
        text = " ".join(str(exc).split())
        raise ValueError(f"run file {path!r} is not valid {_kind(path)}: {text}") from None
    if not isinstance(data, dict):
        raise ValueError(f"run file {path!r} holds {type(data).__name__}, not a table of options")
    folder = os.path.dirname(os.path.abspath(path))
    out = {}
    for key, value in data.items():
        name = str(key).replace("_", "-")
        out[name] = _relative(folder, value) if name in PATH_KEYS else value
    if isinstance(out.get("inputs"), str):
        out["inputs"] = [out["inputs"]]
    return out


def _kind(path: str) -> str:
    return "TOML" if path.lower().endswith(".toml") else "YAML"


def _relative(folder: str, value):
    if isinstance(value, list):
        return [_relative(folder, v) for v in value]
    if not isinstance(value, str) or is_url(value):
        return value
    if value.startswith("@"):
        return "@" + _relative(folder, value[1:])
    return os.path.join(folder, os.path.expanduser(value))


def _max_decompressed(value) -> str:
    if not value:
        return "none"
    kind, amount = value
    return f"{amount:g}x" if kind == "x" else str(amount)


def options_of_manifest(m) -> dict:
    """The ``run`` options that made the dataset of manifest ``m``."""
    opts = dict(m.get("options") or {})
    if "converter" in opts and opts["converter"] is None:
        raise ValueError("the dataset was made with a converter given in Python as a function, "
                         "which the command line cannot repeat; pass --converter module:func "
                         "or file.py:func")
    opts.setdefault("converter", m.get("converter"))  # manifests of dask-prep 0.2 and before
    tokens = opts.pop("tokens", None) or {}
    out = {"inputs": m.get("inputs"), "format": m.get("format"), "shard-size": m.get("shard_size")}
    if "max_decompressed" in opts:
        opts["max_decompressed"] = _max_decompressed(opts["max_decompressed"])
    if isinstance(opts.get("exclude"), list):
        raise ValueError("the dataset was made with an exclude list given in Python, which the "
                         "command line cannot repeat; pass --exclude FILE")
    opts["suffix"] = opts.pop("suffixes", None)
    for key in ("bos", "eos"):
        if key in tokens and tokens[key] is None:
            tokens[key] = "none"
    for key, value in {**opts, **tokens}.items():
        if value is not None and value is not False and value != []:
            out[key.replace("_", "-")] = value
    return {k: v for k, v in out.items() if v is not None}


def options_of_dataset(output) -> dict:
    """:func:`options_of_manifest` of the complete dataset in ``output``."""
    from .write.manifest import Manifest
    from .write.output import OutputDir
    m = Manifest.read(OutputDir(os.fspath(output)))
    if not m.get("inputs"):
        raise ValueError(f"{output} records no inputs (written from a bag, not by run); "
                         "--like cannot repeat it")
    return options_of_manifest(m)
