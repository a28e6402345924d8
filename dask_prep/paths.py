"""Local paths are paths: only a name that starts with ``protocol://`` is a URL.

fsspec's own parsing reads ``::`` as a URL chain (``Algorithm::Diff.3pm.gz``
would be the file ``Diff.3pm.gz`` behind a filesystem called ``Algorithm``),
so every name a user gives goes through :func:`filesystem`, never straight to
``fsspec.core.url_to_fs`` or ``fsspec.open``.

>>> is_url("s3://bucket/a.txt"), is_url("simplecache::s3://bucket/a.txt")
(True, True)
>>> is_url("man3/Algorithm::Diff.3pm.gz"), is_url("notes #1?.txt"), is_url("dir/http://x")
(False, False, False)
"""
from __future__ import annotations

import os
import re

__all__ = ["is_url", "filesystem", "absolute", "printable"]

# a scheme followed by "://", perhaps after a chain of bare protocol names
# ("simplecache::s3://..."); whatever else is a local path
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*::)*[A-Za-z][A-Za-z0-9+.-]*://")
# a chain separator inside a URL: "::" and another protocol
_CHAIN = re.compile(r"::(?:[A-Za-z][A-Za-z0-9+.-]*::)*[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(name: str) -> bool:
    """True for ``protocol://...`` (and fsspec chains ending in one), else a local path."""
    return bool(_URL.match(name))


def filesystem(name: str, storage_options: dict | None = None):
    """``(fs, path)`` for ``name``: the local file system and the absolute path,
    untouched, for a local name; for a URL its file system and path.

    In a URL, ``::`` separates a chain only where a protocol follows it
    (``zip://a.txt::s3://bucket/a.zip``); elsewhere it is part of the name
    (``s3://bucket/Algorithm::Diff.3pm.gz``).
    """
    from fsspec.implementations.local import LocalFileSystem
    if not is_url(name):
        return LocalFileSystem(), os.path.abspath(name)
    if _CHAIN.search(name, _URL.match(name).end()) or _URL.match(name).group().count("::"):
        from fsspec.core import url_to_fs
        return url_to_fs(name, **(storage_options or {}))
    import fsspec
    protocol = name.split("://", 1)[0]
    cls = fsspec.get_filesystem_class(protocol)
    options = {**cls._get_kwargs_from_urls(name), **(storage_options or {})}
    fs = LocalFileSystem() if cls is LocalFileSystem else fsspec.filesystem(protocol, **options)
    return fs, fs._strip_protocol(name)


def absolute(name: str) -> str:
    """A local name made absolute (an ``@list`` keeps its ``@``); URLs as given."""
    if name.startswith("@"):
        return "@" + absolute(name[1:])
    return name if is_url(name) else os.path.abspath(name)


def printable(name: str) -> str:
    """``name`` as valid UTF-8 text: a file name that is not UTF-8 (its bad bytes
    are surrogates in Python, as ``os.fsdecode`` gives them) shows them as
    ``\\xff`` escapes; any other name is returned as it is.

    >>> printable(os.fsdecode(b"caf\\xe9.txt")), printable("café.txt")
    ('caf\\\\xe9.txt', 'café.txt')
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
