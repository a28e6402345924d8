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
