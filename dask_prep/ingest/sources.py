"""Discover: inputs (files, directories, globs, ``@lists``, URLs) -> sorted sources.

>>> import dask_prep as dp, pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "b.txt").write_text("two"); _ = (d / "a.txt").write_text("one")
>>> sources = dp.discover([str(d), str(d / "nope.txt")], suffixes=".txt")
>>> [pathlib.Path(s.path).name for s in sources], sources.missing == (str(d / "nope.txt"),)
(['a.txt', 'b.txt'], True)
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from fsspec.implementations.local import LocalFileSystem

from ..paths import filesystem, is_url
from .exclude import ExcludeList

__all__ = ["Source", "Sources", "discover", "COMPRESSIONS"]

logger = logging.getLogger(__name__)

#: Compressed suffixes read transparently, and the codec fsspec uses for each.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma", ".zst": "zstd"}


@dataclass(frozen=True, order=True)
class Source:
    """One input document: its path (a local path or an fsspec URL), its size, and
    what says it changed: the modification time in nanoseconds for a local file,
    the ETag (else the modification time) on an object store; ``None`` when the
    file system tells neither."""

    path: str
    size: int
    modified: int | str | None = field(default=None, compare=False)

    @property
    def compression(self) -> str | None:
        return COMPRESSIONS.get(posixpath.splitext(self.path)[1].lower())


@dataclass(frozen=True)
class Sources(Sequence):
    """The sorted, de-duplicated sources of a run, and what was left out.

    ``missing`` lists explicit inputs that do not exist (or globs that matched
    nothing) and what discovery could not use; ``excluded`` counts the files
    the exclude list dropped (those inside excluded folders included), and
    ``excluded_files`` lists each as ``(path, the entry that excluded it)``.
    """

    items: tuple[Source, ...]
    missing: tuple[str, ...] = ()
    excluded: int = 0
    storage_options: dict = field(default_factory=dict, compare=False)
    excluded_files: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.items)

    def digest(self) -> str:
        """A sha256 of canonical JSON over every source's path, size and
        modification stamp: changes when any input changes, is added or goes."""
        h = hashlib.sha256()
        for s in self.items:
            h.update(json.dumps([s.path, s.size, s.modified], ensure_ascii=True).encode() + b"\n")
        return h.hexdigest()

    def summary(self) -> dict:
        return {
            "count": len(self.items),
            "bytes": self.total_bytes,
            "digest": self.digest(),
            "missing": list(self.missing),
            "excluded": self.excluded,
        }

    def __repr__(self) -> str:
        return (f"Sources({len(self)} files, {self.total_bytes:,} bytes, "
                f"{len(self.missing)} missing, {self.excluded} excluded)")


def discover(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    suffixes: str | Iterable[str] | None = None,
    exclude: str | os.PathLike | Iterable[str] | None = None,
    storage_options: dict | None = None,
    outside: str | os.PathLike | None = None,
) -> Sources:
    """Find every document named by ``inputs``, sorted by path.

    Parameters
    ----------
    inputs
        Files, directories (walked recursively, hidden entries skipped), globs
        (``**`` included), ``@list.txt`` files (one input a line, relative to the
        list's folder) and fsspec URLs such as ``s3://bucket/prefix/``.
    suffixes
        Keep only files ending in one of these (``.txt`` also keeps ``.txt.gz``;
        ``.txt.gz`` keeps only those).
        Applies to what directories and globs expand to, not to files named
        explicitly.
    exclude
        A file of paths, names or globs, one a line (relative ones relative to
        the file's folder), or a list of them (relative to the working
        directory); see :mod:`dask_prep.ingest.exclude`. An entry that matches
        nothing is warned about.
    storage_options
        Passed to fsspec for remote URLs.
    outside
        A folder never read, nor walked (a run's output folder, when it lies
        inside an input folder: a rerun must not read its own shards).
    """
    storage_options = dict(storage_options or {})
    suffixes = _as_suffixes(suffixes)
    patterns = ExcludeList.of(exclude)
    avoid = _Outside(outside)
    found: dict[str, Source] = {}
    missing: list[str] = []
    for inp in _as_list(inputs):
        for source in _expand(inp, suffixes, storage_options, missing, (patterns, avoid)):
            found.setdefault(source.path, source)
    kept, excluded = [], []
    for s in found.values():
        if avoid.holds(s.path):
            continue
        by = patterns.match(s.path) if patterns else None
        (kept if by is None else excluded).append(s if by is None else (s.path, by))
    if patterns:
        patterns.warn_unused()
    kept.sort(key=attrgetter("path"))  # paths are unique: no need to compare sizes
    excluded.sort()
    return Sources(tuple(kept), tuple(missing), len(excluded), storage_options, tuple(excluded))


def _as_list(inputs) -> list[str]:
    """Names as ``str``: a ``bytes`` name (not UTF-8, say) as ``os.fsdecode`` gives it."""
    if isinstance(inputs, (str, bytes, os.PathLike)):
        return [os.fsdecode(inputs)]
    return [os.fsdecode(i) for i in inputs]


def _as_suffixes(suffixes) -> tuple[str, ...]:
    if suffixes is None:
        return ()
    if isinstance(suffixes, str):
        suffixes = [suffixes]
    return tuple((s if s.startswith(".") else "." + s).lower() for s in suffixes)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _hidden(path: str, below: str, pattern: str = "") -> bool:
    """True if a component of ``path`` under ``below`` starts with a dot (and the
    pattern did not ask for dot entries, as in a shell)."""
    if "/." in pattern:
        return False
    prefix = below.rstrip("/") + "/"
    rel = path[len(prefix):] if path.startswith(prefix) else path
    return any(part.startswith(".") for part in rel.split("/"))


def _keep(path: str, suffixes: tuple[str, ...]) -> bool:
    """``suffixes`` as :func:`_as_suffixes` gives them (lower case)."""
    if not suffixes:
        return True
    name = path.lower()
    if name.endswith(suffixes):  # ".txt", or ".txt.gz" asked for by its full name
        return True
    comp = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    return comp is not None and name[: -len(comp)].endswith(suffixes)


class _Outside:
    """The folder discovery keeps out of: by name, and (local) by device and
    inode, so that a link into it is kept out too."""

    def __init__(self, folder):
        self.prefixes, self.key = (), None
        if folder is None:
            return
        name = os.fsdecode(folder)
        names = {name} if is_url(name) else {os.path.abspath(name), os.path.realpath(name)}
        self.prefixes = tuple(n.rstrip("/") + "/" for n in names)
        if not is_url(name):
            try:
                st = os.stat(name)
                self.key = (st.st_dev, st.st_ino)
            except OSError:
                pass

    def holds(self, path: str) -> bool:
        return bool(self.prefixes) and path.startswith(self.prefixes)

    def is_folder(self, st) -> bool:
        return self.key is not None and (st.st_dev, st.st_ino) == self.key


def _expand(inp: str, suffixes, storage_options, missing, rules=(None, None)) -> Iterable[Source]:
    if inp.startswith("@"):
        yield from _expand_list(inp[1:], suffixes, storage_options, missing, rules)
        return
    fs, root = filesystem(inp, storage_options)
    local = isinstance(fs, LocalFileSystem)
    name = (lambda p: os.path.abspath(p)) if local else fs.unstrip_protocol
    # a name that exists is that file or folder, glob characters or not
    exists = os.path.lexists(root) if local else _has_magic(root) and fs.exists(root)
    if _has_magic(root) and not exists:
        static, pattern = _literal_folders(root) if local else (None, root)
        if static is None:
            static = root[: min(root.find(c) for c in "*?[" if c in root)].rsplit("/", 1)[0]
        infos = [i for i in fs.glob(pattern, detail=True).values() if i["type"] == "file"]
        if not infos:
            missing.append(inp)
        for info in infos:
            if _keep(info["name"], suffixes) and not _hidden(info["name"], static, root):
                yield Source(name(info["name"]), int(info["size"] or 0), _stamp(info))
    elif local:
        if os.path.isdir(root):
            yield from _walk_local(root, suffixes, rules, missing)
        elif exists:
            yield from _local_file(root, missing)
        else:
            missing.append(inp)
    elif fs.isdir(root):
        for path, info in fs.find(root, detail=True, withdirs=False).items():
            if info.get("type") == "file" and _keep(path, suffixes) and not _hidden(path, root):
                yield Source(name(path), int(info["size"] or 0), _stamp(info))
    elif fs.isfile(root):
        info = fs.info(root)
        yield Source(name(root), int(info.get("size") or 0), _stamp(info))
    else:
        missing.append(inp)


def _literal_folders(pattern: str) -> tuple[str | None, str]:
    """The longest run of leading folders of a local glob that exist by their
    literal names (``dir [x]/*.txt``: ``dir [x]`` is that folder, not a class),
    and the pattern with their glob characters escaped."""
    parts = pattern.split("/")
    i = 1
    while i < len(parts) - 1 and os.path.isdir("/".join(parts[: i + 1]) or "/"):
        i += 1
    static = "/".join(parts[:i]) or "/"
    if not _has_magic(static):
        return None, pattern
    return static, "/".join([glob.escape(static), *parts[i:]])


def _local_file(path: str, missing: list) -> Iterable[Source]:
    """An existing local name that is not a folder: a regular file is a source;
    a broken link is kept for its conversion to report; a FIFO, socket or
    device is reported in ``missing`` (opening a FIFO would block a worker)."""
    try:
        st = os.stat(path)
    except OSError:
        yield Source(path, 0)
        return
    if stat.S_ISREG(st.st_mode):
        yield Source(path, st.st_size, st.st_mtime_ns)
    else:
        missing.append(f"{path} (not a regular file)")


def _stamp(info: dict) -> int | str | None:
    """What tells that a file changed, from an fsspec ``info`` dict: a local
    file's modification time in ns, an object store's ETag, else its mtime."""
    if "ino" in info:  # a local file: its mtime in ns (fsspec's is in seconds)
        try:
            return os.stat(info["name"]).st_mtime_ns
        except OSError:
            return None
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated"):
        if info.get(key) is not None:
            return str(info[key])
    return None


def _walk_local(root: str, suffixes, rules, missing: list) -> Iterable[Source]:
    """Walk a local tree, not descending into hidden or excluded directories.

    Links to folders are followed once every real folder is walked, each
    folder at most once (a loop, or a second way into a folder, is reported in
    ``missing`` and not followed). An unreadable folder, a FIFO, socket or
    device (opening a FIFO would block a worker forever) is reported in
    ``missing``; a broken link or a link loop among the files is kept for its
    conversion to report, as an unreadable file is. The ``outside`` folder of
    ``rules`` (the output) is not walked.
    """
    patterns, avoid = rules
    root = os.path.abspath(root)
    folders, links, seen = [root], [], set()
    while folders or links:
        folder = folders.pop() if folders else links.pop()
        try:
            st = os.stat(folder)
            if avoid is not None and avoid.is_folder(st):
                logger.info("not reading %s: it is the output folder", folder)
                continue
            if (st.st_dev, st.st_ino) in seen:
                missing.append(f"{folder} (link to a folder walked already: a loop or a second "
                               "way in; not followed)")
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=attrgetter("name"), reverse=True)
        except OSError as exc:
            missing.append(f"{folder} (folder not readable: {exc.strerror or exc})")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link loop: not a folder
                is_dir = False
            if is_dir:
                if patterns:  # walked all the same: its files count as excluded
                    patterns.enter_folder(entry.path, entry.name)
                (links if entry.is_symlink() else folders).append(entry.path)
                continue
            if not _keep(entry.name, suffixes):
                continue
            try:
                st = entry.stat()
            except OSError:  # a broken link or a loop: its conversion reports the error
                yield Source(entry.path, 0)
                continue
            if stat.S_ISREG(st.st_mode):
                yield Source(entry.path, st.st_size, st.st_mtime_ns)
            else:
                missing.append(f"{entry.path} (not a regular file)")


def _expand_list(list_path: str, suffixes, storage_options, missing, rules) -> Iterable[Source]:
    try:
        fs, path = filesystem(list_path, storage_options)
        with fs.open(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
            entries = [line.strip() for line in f.read().splitlines()]
    except FileNotFoundError:
        missing.append("@" + list_path)
        return
    base = posixpath.dirname(list_path) if is_url(list_path) else os.path.dirname(list_path)
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        if not (is_url(entry) or os.path.isabs(entry)):
            entry = posixpath.join(base, entry) if is_url(list_path) else os.path.join(base, entry)
        yield from _expand(entry, suffixes, storage_options, missing, rules)
