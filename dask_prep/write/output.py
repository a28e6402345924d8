"""The output directory: atomic writes, the manifest, and what dask-prep owns.

Layout (version 2)::

    OUT/shard-00000.parquet ...   exact shards (or .pkl)
    OUT/.errors.jsonl             one JSON object per failed source or bad item
    OUT/.sources.jsonl            the sources the dataset was made from
    OUT/.manifest.json            written last: the only proof the dataset is complete
    OUT/.dask-prep/               work area of a run in progress (removed on success)

Every file that is not a shard begins with ``.``, which Parquet readers skip as
not data (pyarrow, pandas, dask and duckdb skip ``_`` too; Hugging Face
``datasets`` only ``.``), so the folder opens as a dataset with no glob; polars
needs ``hidden_file_prefix="."`` (it refuses a folder holding any file that is
not Parquet). Version 1 folders (``manifest.json``, ``errors.jsonl``,
``_sources.jsonl``) are still read.

Every file is written under a temporary name in its final folder and renamed,
so a reader never sees half a file. Locally each file is fsynced before its
rename, and the folder before and after ``.manifest.json`` is written, so a
dataset the manifest calls complete survives a crash of the machine. On object
stores, where a single PUT is already atomic and durable, files are written in
place; ``.manifest.json`` is still last.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable

from fsspec.implementations.local import LocalFileSystem

from ..errors import OutputExistsError
from ..paths import filesystem

__all__ = ["OutputDir", "MANIFEST", "ERRORS", "SOURCES", "WORK", "OLD_MANIFEST", "OLD_ERRORS",
           "OLD_SOURCES", "EXCLUDED", "TEMPORARY", "check_writable"]

MANIFEST = ".manifest.json"
ERRORS = ".errors.jsonl"
SOURCES = ".sources.jsonl"  # the sources a dataset was made from (sources_file.py)
EXCLUDED = ".excluded.jsonl"  # the files its exclude list left out, and by which entry
# layout version 1
OLD_MANIFEST, OLD_ERRORS, OLD_SOURCES = "manifest.json", "errors.jsonl", "_sources.jsonl"
WORK = ".dask-prep"
_TMP = ".tmp-"
#: ``NAME.tmp-<32 hex digits>``: a file being written under a temporary name.
TEMPORARY = re.compile(rf"(.+){re.escape(_TMP)}[0-9a-f]{{32}}")


class OutputDir:
    """A folder on any fsspec filesystem, addressed by names relative to it."""

    #: fsync local files before their rename and the folder at the commit. Off
    #: only in ``benchmarks/fsync.py``, to measure what it costs.
    fsync = True

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = filesystem(self.url, self.storage_options)
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.root = os.path.abspath(self.root)

    def __reduce__(self):
        return OutputDir, (self.url, self.storage_options)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root

    def url_of(self, name: str) -> str:
        """A path (local) or URL (remote) any fsspec reader can open."""
        path = self.path(name)
        return path if self.local else self.fs.unstrip_protocol(path)

    def makedirs(self, name: str = "") -> None:
        self.fs.makedirs(self.path(name), exist_ok=True)

    def write_atomic(self, name: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(self.path(name), data)
            return

        def write(path: str) -> None:
            with open(path, "wb") as f:
                f.write(data)
        self.write_local_atomic(name, write)

    def write_local_atomic(self, name: str, write: Callable[[str], None]) -> None:
        """Have ``write(path)`` make the file at a temporary path, then move it to
        ``name``. Local outputs only."""
        final = self.path(name)
        tmp = f"{final}{_TMP}{uuid.uuid4().hex}"
        try:
            write(tmp)
            if self.fsync:
                _fsync(tmp)
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def sync(self, name: str = "") -> None:
        """Make the renames done in folder ``name`` durable (local outputs)."""
        if self.local and self.fsync:
            _fsync(self.path(name))

    def size_and_sha256(self, name: str) -> tuple[int, str]:
        """Of a local file just written: read back from the page cache with one
        small buffer."""
        h, buf, size = hashlib.sha256(), bytearray(1 << 20), 0
        view = memoryview(buf)
        with open(self.path(name), "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                size += n
        return size, h.hexdigest()

    def sha256(self, name: str) -> str:
        """Of any file in the folder, read in 1 MiB blocks."""
        if self.local:
            return self.size_and_sha256(name)[1]
        h = hashlib.sha256()
        with self.fs.open(self.path(name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self.path(name))

    def fresh(self) -> OutputDir:
        """Forget cached listings: on object stores, workers write behind our back."""
        if not self.local:
            self.fs.invalidate_cache()
        return self

    def exists(self, name: str) -> bool:
        return self.fresh().fs.exists(self.path(name))

    def isfile(self, name: str) -> bool:
        return self.fresh().fs.isfile(self.path(name))

    def size(self, name: str) -> int:
        return self.fs.size(self.path(name))

    def replace(self, src: str, dst: str) -> None:
        if self.local:
            os.replace(self.path(src), self.path(dst))
        else:
            self.fs.mv(self.path(src), self.path(dst))

    def remove(self, name: str) -> None:
        """Delete the file ``name`` if it exists: one file of dask-prep's own, by a
        name it made (never a folder, never a path leaving the output)."""
        _check_own_name(name)
        path = self.path(name)
        if not self.fresh().fs.exists(path):
            return
        if self.fs.isdir(path):
            raise OutputExistsError(f"{path} is a directory; dask-prep deletes only files it wrote "
                                    "and never a folder: move it away and run again")
        if self.local:
            os.remove(path)
        else:
            self.fs.rm_file(path)

    def remove_work(self, keep: str | None = None) -> None:
        """Delete what the work folder ``.dask-prep/`` holds but ``keep`` (the
        lock, while it is held), then the folder itself if that leaves it empty."""
        path = self.path(WORK)
        for name in self.listdir(WORK):
            if f"{WORK}/{name}" != keep:
                self.fs.rm(f"{path}/{name}", recursive=True)
        if keep is None or not self.exists(keep):
            try:
                self.fs.rmdir(path)
            except (OSError, NotImplementedError):
                pass  # another run's lock appeared in it; object stores have no folders

    def sizes(self) -> dict[str, int]:
        """``{name: bytes}`` of the files directly in the folder, from one listing."""
        prefix = self.root.rstrip("/") + "/"
        return {e["name"][len(prefix):] if e["name"].startswith(prefix) else e["name"].rsplit("/", 1)[-1]:
                e["size"] for e in self.fresh().fs.ls(self.root, detail=True) if e["type"] == "file"}

    def listdir(self, name: str = "") -> list[str]:
        """Names directly inside folder ``name`` (empty if it does not exist)."""
        path = self.path(name)
        if not self.fresh().fs.isdir(path):
            return []
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix):] if p.startswith(prefix) else p.rsplit("/", 1)[-1]
                      for p in self.fs.ls(path, detail=False))

    def foreign_files(self) -> list[str]:
        """Entries that dask-prep would not have written."""
        from .formats import dataset_file_names, shard_file_pattern
        names = self.listdir()
        ours = {MANIFEST, ERRORS, SOURCES, EXCLUDED, WORK, *dataset_file_names()}
        if OLD_MANIFEST in names:  # a version 1 dataset; else these are the user's own
            ours |= {OLD_MANIFEST, OLD_ERRORS, OLD_SOURCES}
        shard = shard_file_pattern()
        return [n for n in names if n not in ours and not shard.match(n) and _TMP not in n]

    def write_json(self, name: str, obj) -> None:
        self.write_atomic(name, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_own_name(name: str) -> None:
    """A name dask-prep made: in the folder or its work folder, never leaving them."""
    parts = name.split("/")
    if (not name or "\\" in name or len(parts) > 2 or (len(parts) == 2 and parts[0] != WORK)
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"refusing to delete {name!r}: not a name dask-prep writes")


def check_writable(out: OutputDir, overwrite: bool) -> None:
    """Refuse a folder holding files dask-prep did not write, unless ``overwrite``."""
    if overwrite or not out.fs.exists(out.root):
        return
    if not out.fs.isdir(out.root):
        raise OutputExistsError(f"output {out.url} exists and is not a directory")
    foreign = out.foreign_files()
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise OutputExistsError(
            f"output directory {out.url} holds {len(foreign)} file(s) dask-prep did not write "
            f"({shown}); choose an empty or new directory, or pass --overwrite "
            "(dask-prep never deletes files it did not write)")
