"""Pickle shards: any picklable records; a shard is one ``pickle.dump`` of a list.

``pickle.load(open(f, "rb"))`` gives the records, as existing scripts expect.
Unpickling runs code, so reading needs ``allow_pickle=True``; counting the
records of a shard (``verify``) walks its opcodes and runs nothing.

>>> import pickle
>>> from dask_prep.write.formats.pickle import count_list_items
>>> count_list_items(pickle.dumps([{"a": [1, 2]}, "x", [3]], protocol=5))
3
"""
from __future__ import annotations

import pickle
import pickletools
import struct

import numpy as np

from .base import ShardFile, ShardFormat

__all__ = ["PickleFormat", "count_list_items"]


class PickleFormat(ShardFormat):
    name, suffix = "pickle", ".pkl"
    needs_trust = True
    stage_suffix = ".stage.pkl"

    def write(self, batch, path: str) -> None:
        with open(path, "wb") as f:
            pickle.dump(list(batch), f, protocol=5)

    def encode(self, batch) -> bytes:
        return pickle.dumps(list(batch), protocol=5)

    def decode(self, shard: ShardFile) -> list:
        return pickle.loads(shard.read())  # the caller passed allow_pickle=True

    def records(self, batch):
        return batch  # what pickle.load gives, as existing scripts see it

    def count(self, shard: ShardFile) -> int:
        return count_list_items(shard.read())

    # Leftovers are staged as each record's own pickle (protocol 3, without its
    # PROTO and STOP) after an index of offsets, so a merge joins byte ranges
    # into the pickle of one list instead of unpickling and pickling them
    # again. That is valid: at protocol 3 a record's memo entries are written
    # (BINPUT) before they are read (BINGET) inside its own bytes.

    def encode_stage(self, batch) -> bytes:
        items = [pickle.dumps(r, protocol=3)[2:-1] for r in batch]
        offsets = np.cumsum([0, *map(len, items)], dtype=np.int64)
        return _STAGE + struct.pack("<q", len(items)) + offsets.tobytes() + b"".join(items)

    def decode_stage(self, data: bytes) -> list:
        return pickle.loads(_join([_items(data)]))  # written by this run's own workers

    def merge_stages(self, stages: list) -> bytes:
        return _join([_items(data, a, b) for data, a, b in stages])


_STAGE = b"dask-prep-pickle-stage-1\n"
_HEAD, _TAIL = b"\x80\x03](", b"e."  # PROTO 3, EMPTY_LIST, MARK ... APPENDS, STOP


def _items(data: bytes, start: int = 0, stop: int | None = None) -> memoryview:
    """The bytes of records ``start:stop`` of a staged file."""
    if not data.startswith(_STAGE):
        raise ValueError("not a staged pickle file")
    (n,) = struct.unpack_from("<q", data, len(_STAGE))
    base = len(_STAGE) + 8
    offsets = np.frombuffer(data, np.int64, n + 1, base)
    body = base + 8 * (n + 1)
    stop = n if stop is None else stop
    return memoryview(data)[body + offsets[start]: body + offsets[stop]]


def _join(parts: list) -> bytes:
    return b"".join([_HEAD, *parts, _TAIL])


#: Opcodes that leave the stack as it is (memo writes, framing).
_NO_STACK_CHANGE = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO"})


def count_list_items(data: bytes) -> int:
    """How many items the list pickled in ``data`` holds, without unpickling it.

    Simulates the unpickler's stack with :func:`pickletools.genops`; raises
    :class:`ValueError` if ``data`` is not the pickle of one list.
    """
    stack: list = []   # what each stack slot is: "list" (the outer list) or None
    marks: list = []
    count = 0
    try:
        for op, _, _ in pickletools.genops(data):
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in after:
                marks.append(len(stack))
                continue
            if op.name in ("APPEND", "APPENDS") and len(stack) > 0:
                start = marks.pop() if op.name == "APPENDS" else len(stack) - 1
                if start == 1 and stack[0] == "list":
                    count += len(stack) - start
                del stack[start:]
                continue
            if op.name == "STOP":
                break
            if op.name in _NO_STACK_CHANGE:
                continue
            if pickletools.stackslice in before:
                del stack[marks.pop():]
                before = [b for b in before if b not in (pickletools.markobject, pickletools.stackslice)]
            if before:
                del stack[len(stack) - len(before):]
            if op.name == "EMPTY_LIST" and not stack:
                stack.append("list")
            else:
                stack.extend([None] * len(after))
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not a pickled list: {exc}") from None
    if stack != ["list"]:
        raise ValueError("not the pickle of one list")
    return count
