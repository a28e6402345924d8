"""Open sources: transparent decompression, UTF-8 decoding, byte-range line reading."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
from collections.abc import Iterator

from ..errors import BinaryFileError, DecompressionLimitError, EmptyFileError
from ..options import MIN_DECOMPRESSED
from .bad_items import current_source
from ..paths import filesystem, is_url
from .sources import COMPRESSIONS

__all__ = ["open_bytes", "read_bytes", "read_text", "read_paragraphs", "iter_lines"]

_SNIFF = 8192
_BLOCK = 1 << 16  # under glibc's mmap threshold: blocks reuse heap memory, not fresh pages


def _compression(path: str) -> str | None:
    return COMPRESSIONS.get(posixpath.splitext(path)[1].lower())


def open_bytes(path: str, storage_options: dict | None = None) -> io.IOBase:
    """Open ``path`` for binary reading, decompressing .gz/.bz2/.xz/.zst.

    While dask-prep converts a source, a compressed one is read only as far as
    its ``max_decompressed`` limit (:class:`~dask_prep.options.ConvertOptions`):
    past it, reading raises :class:`~dask_prep.errors.DecompressionLimitError`.
    """
    comp = _compression(path)
    if comp == "zstd":
        f = io.BufferedReader(_ZstdReader(open_bytes_raw(path, storage_options)), _BLOCK)
    elif is_url(path):
        fs, name = filesystem(path, storage_options)
        f = fs.open(name, "rb", compression=comp)
    else:
        f = _LOCAL[comp](path, "rb")
    if comp is None:
        return f
    limit = _limit(path, storage_options)
    return f if limit is None else io.BufferedReader(_Limited(f, limit, path), _BLOCK)


def _limit(path: str, storage_options: dict | None) -> tuple[int, str] | None:
    """The decompressed bytes a compressed source may give, and how to say so."""
    ctx = current_source()
    rule = ctx.max_decompressed if ctx is not None else None
    if rule is None:
        return None
    kind, value = rule
    if kind == "bytes":
        return int(value), f"the limit of {_size(value)}"
    if is_url(path):
        fs, name = filesystem(path, storage_options)
        size = fs.size(name)
    else:
        size = os.path.getsize(path)
    limit = max(MIN_DECOMPRESSED, int(size * value))
    return limit, f"{value:g}x its {_size(size)} compressed (the limit, {_size(limit)})"


def _size(n: float) -> str:
    from dask.utils import format_bytes
    return format_bytes(int(n))


class _Limited(io.RawIOBase):
    """A decompressed stream that fails past ``limit`` bytes (a compression bomb
    would fill the worker's memory, or its disk, long before it ended)."""

    def __init__(self, f: io.IOBase, limit: tuple[int, str], path: str):
        self._f, (self._left, self._why) = f, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        self._left -= n
        if self._left < 0:
            raise DecompressionLimitError(
                f"decompresses to more than {self._why}: a compression bomb, or a file that "
                "compresses unusually well; raise max_decompressed (--max-decompressed) to read it")
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def open_bytes_raw(path: str, storage_options: dict | None = None) -> io.IOBase:
    """``path`` as stored (no decompression); a local name is never parsed as a URL."""
    if is_url(path):
        fs, name = filesystem(path, storage_options)
        return fs.open(name, "rb")
    return open(path, "rb")


_LOCAL = {None: open, "gzip": gzip.open, "bz2": bz2.open, "lzma": lzma.open}


class _ZstdReader(io.RawIOBase):
    """The content of a .zst file: every frame, one after another (``zstd`` and
    ``pzstd`` write several), and an ``EOFError`` when the file ends inside a
    frame, as gzip, bz2 and lzma raise for a cut file. (zstandard's
    ``stream_reader`` stops after the first frame and returns a cut frame's
    part without a word.)"""

    def __init__(self, raw: io.IOBase):
        import zstandard
        self._raw, self._new = raw, zstandard.ZstdDecompressor().decompressobj
        self._d, self._fed = self._new(), False  # fed: the current frame has begun
        self._out, self._pos = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._out):
            chunk = self._raw.read(_BLOCK)
            if not chunk:
                if self._fed and not self._d.eof:
                    raise EOFError("Compressed file ended before the end of its zstd frame "
                                   "was reached (a cut or unfinished .zst file)")
                return 0
            self._out, self._pos = memoryview(self._decompress(chunk)), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def _decompress(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._d.eof:  # the next frame
                self._d, self._fed = self._new(), False
            self._fed = True
            out.append(self._d.decompress(chunk))
            chunk = self._d.unused_data if self._d.eof else b""
        return b"".join(out)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def read_bytes(path: str, storage_options: dict | None = None) -> bytes:
    """The whole (decompressed) content; an empty document is an error."""
    with open_bytes(path, storage_options) as f:
        data = f.read()
    if not data:
        raise EmptyFileError(_EMPTY)
    return data


_EMPTY = "empty document (0 bytes after decompression)"


def _check_text(data: bytes) -> None:
    nul = data.find(b"\x00", 0, _SNIFF)
    if nul >= 0:
        raise BinaryFileError(f"binary file: NUL byte at offset {nul}; expected UTF-8 text")


def decode(data: bytes, errors: str = "strict") -> str:
    text = data.decode("utf-8", errors)
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str, errors: str = "strict", *, storage_options: dict | None = None) -> str:
    """Read a whole document as text.

    ``errors="strict"`` (the default) fails the file on invalid UTF-8 with the
    byte position; ``"replace"`` keeps it, with U+FFFD for each bad byte. A file
    with a NUL byte in its first 8 KiB is refused as binary.
    """
    data = read_bytes(path, storage_options)
    _check_text(data)
    return decode(data, errors)


def iter_lines(path: str, start: int | None = None, end: int | None = None,
               errors: str = "strict", *,
               storage_options: dict | None = None) -> Iterator[tuple[int | None, str]]:
    """Yield ``(line_number, line)`` for lines starting in ``[start, end)``.

    A line belongs to the range its first byte is in, so ranges that tile a file
    yield every line exactly once. Line numbers (1-based) are known only for a
    range starting at 0; otherwise ``None``. The newline is stripped.
    """
    start = start or 0
    with open_bytes(path, storage_options) as f:
        if start:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())
            lineno = None
        else:
            pos, lineno = 0, 0
        # Read in blocks of whole lines; decode and split each in C. Per line,
        # Python only yields: a readline() or a decode() per line costs twice as much.
        while end is None or pos < end:
            data = f.read(_BLOCK)
            if data and not data.endswith(b"\n"):
                data += f.readline()  # complete the last line, however long
            if not data:
                if lineno == 0:
                    raise EmptyFileError(_EMPTY)
                return
            if pos == 0 and lineno is not None:
                _check_text(data)
            if end is not None and pos + len(data) > end:  # only the lines that start before end
                data = data[:data.find(b"\n", end - pos - 1) + 1 or len(data)]
            lines = _decode_lines(data, errors, bom=pos == 0)
            if lineno is None:
                for line in lines:
                    yield None, line
            else:
                yield from enumerate(lines, lineno + 1)
                lineno += len(lines)
            pos += len(data)


def _decode_lines(data: bytes, errors: str, bom: bool) -> list[str]:
    """The lines of ``data`` (each newline-terminated but perhaps the last),
    newlines and trailing carriage returns removed; a BOM too if ``bom``."""
    try:
        text = decode(data, errors) if bom else data.decode("utf-8", errors)
    except UnicodeDecodeError:
        for raw in data.split(b"\n"):  # again line by line, so the error names the position in its line
            raw.decode("utf-8", errors)
        raise
    lines = text.split("\n")
    if data.endswith(b"\n"):
        lines.pop()
    return [line.rstrip("\r") for line in lines] if "\r" in text else lines


def read_paragraphs(path: str, start: int | None = None, end: int | None = None,
                    errors: str = "strict", *, storage_options: dict | None = None) -> str:
    """The text of the paragraphs starting in ``[start, end)``, for splitting prose.

    Ranges are cut at blank lines: a range runs from the first blank line at or
    after ``start`` (the file's start for 0) to the first one at or after
    ``end`` (the file's end for ``None``). Ranges that tile a file therefore
    tile its text at paragraph breaks, which end sentences anyway.
    """
    if not start and end is None:
        return read_text(path, errors, storage_options=storage_options)
    with open_bytes(path, storage_options) as f:
        begin = _blank_line_at_or_after(f, start) if start else 0
        stop = None if end is None else _blank_line_at_or_after(f, end)
        if stop is not None and stop <= begin:
            return ""
        f.seek(begin)
        data = f.read() if stop is None else f.read(stop - begin)
    if begin == 0:
        _check_text(data)
    return decode(data, errors)


def _blank_line_at_or_after(f, pos: int) -> int:
    """The offset where the first whitespace-only line starting at or after ``pos``
    starts, or the end of the file."""
    f.seek(pos - 1)
    p = pos - 1 + len(f.readline())  # the first line start >= pos
    while True:
        line = f.readline()
        if not line or not line.strip():
            return p
        p += len(line)
