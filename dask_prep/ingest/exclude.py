"""The exclude list: which sources a run leaves out, and which entry left each out.

An entry is a path, a name or a glob. A name or glob without ``/`` matches a
file's name, or the name of a folder walked (every file below it is then
excluded); one with ``/`` matches a file, or a folder and all below it. In a
list *file*, relative entries are relative to the file's folder (as ``@list``
entries are); in a list given in Python, to the working directory.

>>> import os
>>> ex = ExcludeList(["drafts", "*.bak", "/data/old/"])
>>> [ex.match(p) for p in ["/data/a.txt", "/data/x.bak", "/data/old/y.txt"]]
[None, '*.bak', '/data/old/']
>>> ex.enter_folder("/data/drafts", "drafts"), ex.match("/data/drafts/z.txt")
(True, 'drafts')
>>> ExcludeList(["doc [1].txt"]).match("/data/doc [1].txt")  # a literal name, though glob-like
'doc [1].txt'
>>> ExcludeList(["*.bak", "nothing-like-this"]).unused()
['*.bak', 'nothing-like-this']
"""
from __future__ import annotations

import fnmatch
import logging
import os
import posixpath

from ..paths import filesystem, is_url

__all__ = ["ExcludeList"]

logger = logging.getLogger(__name__)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


class ExcludeList:
    """Entries read once; :meth:`match` says which entry (as written) excludes a path."""

    def __init__(self, entries, base: str | None = None, where: str = ""):
        self.where = where  # "exclude list FILE" for messages
        self._entries: list[tuple[str, str]] = []  # (as written, the form matched)
        for line in entries:
            line = line.strip()
            if line and not line.startswith("#"):
                self._entries.append((line, self._resolve(line, base)))
        self._used: set[str] = set()
        self._folders: dict[str, str] = {}  # folder path -> the entry that excludes it
        self._index()

    @classmethod
    def of(cls, exclude) -> ExcludeList | None:
        """From a file name (local or URL) or a list of entries; ``None`` for none."""
        if exclude is None:
            return None
        if not isinstance(exclude, (str, bytes, os.PathLike)):
            return cls([os.fsdecode(e) for e in exclude])
        path = os.fsdecode(exclude)
        try:
            fs, local = filesystem(path)
            with fs.open(local, "rt", encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"exclude list {path!r} does not exist; pass a file "
                                    "of paths or globs, one a line, or a list of patterns") from None
        base = posixpath.dirname(path) if is_url(path) else os.path.dirname(os.path.abspath(path))
        return cls(lines, base, f"exclude list {path}")

    def __bool__(self) -> bool:
        return bool(self._entries)

    @staticmethod
    def _resolve(line: str, base: str | None) -> str:
        if "/" not in line or is_url(line) or os.path.isabs(line):
            return line  # a name or glob for any folder, a URL or an absolute path
        if base is not None and is_url(base):
            return posixpath.join(base, line)
        trail = "/" if line.endswith("/") else ""
        return os.path.abspath(os.path.join(base or os.getcwd(), line)) + trail

    def _index(self):
        """Exact names and paths in sets (a lookup per file and parent folder);
        globs tried one by one."""
        names, paths, name_globs, path_globs = {}, {}, [], []
        for written, form in self._entries:
            # an entry is always its literal name or path too: "doc [1].txt" is
            # that file, which as a glob it would not match
            if "/" in form:
                paths.setdefault(form.rstrip("/"), written)
                if _has_magic(form):
                    path_globs.append((written, form.rstrip("/")))
            else:
                names.setdefault(form, written)
                if _has_magic(form):
                    name_globs.append((written, form))
        self._names, self._paths, self._name_globs, self._path_globs = (
            names, paths, name_globs, path_globs)

    def _hit(self, path: str, name: str) -> str | None:
        if name in self._names:
            return self._names[name]
        if path in self._paths:
            return self._paths[path]
        for written, form in self._name_globs:
            if fnmatch.fnmatchcase(name, form):
                return written
        for written, form in self._path_globs:
            if fnmatch.fnmatchcase(path, form):
                return written
        return None

    def enter_folder(self, path: str, name: str) -> bool:
        """Called by a local walk for each folder: True if the list excludes it
        (the walk still goes in, so that its files are counted and listed)."""
        written = self._hit(path, name)
        if written is not None:
            self._folders[path] = written
            self._used.add(written)
        return written is not None

    def match(self, path: str) -> str | None:
        """The entry (as written) that excludes ``path``, else ``None``: the
        file's own name or path, or a folder above it."""
        written = self._hit(path, posixpath.basename(path))
        if written is None:
            for parent in _parents(path):
                written = self._folders.get(parent)
                if written is None and (parent in self._paths or self._path_globs):
                    written = self._paths.get(parent) or next(
                        (w for w, f in self._path_globs if fnmatch.fnmatchcase(parent, f)), None)
                if written is not None:
                    break
        if written is not None:
            self._used.add(written)
        return written

    def unused(self) -> list[str]:
        """Entries that matched nothing so far, as written."""
        return [w for w, _ in self._entries if w not in self._used]

    def warn_unused(self) -> None:
        """Log once the entries that matched nothing (a typo, or a path relative
        to another folder than the list's)."""
        unused = self.unused()
        if unused:
            shown = ", ".join(repr(u) for u in unused[:5]) + (" ..." if len(unused) > 5 else "")
            logger.warning("%s: %d entr%s matched nothing: %s", self.where or "exclude list",
                           len(unused), "y" if len(unused) == 1 else "ies", shown)


def _parents(path: str):
    parent = posixpath.dirname(path)
    while parent and parent != path:
        yield parent
        path, parent = parent, posixpath.dirname(parent)
