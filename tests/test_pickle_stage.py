"""Pickle leftovers are merged by joining bytes: the merged shard is still the
pickle of one list that ``pickle.load`` reads, whatever the records hold."""
import pickle

import numpy as np

from dask_prep.write.formats.pickle import PickleFormat, count_list_items


def records(k, n):
    shared = [k, "shared"]
    return [{"i": k * 100 + j, "twice": (shared, shared), "text": f"ünï {j} \u4e2d",
             "big": 2 ** 70 + j, "arr": np.arange(j % 4, dtype=np.int32), "none": None,
             "nested": {"a": [{"b": (j, j)}] * 2}} for j in range(n)]


def same(got, want) -> bool:
    def plain(r):
        return {k: v for k, v in r.items() if k != "arr"}
    return len(got) == len(want) and all(
        plain(g) == plain(w) and np.array_equal(g["arr"], w["arr"]) and g["arr"].dtype == w["arr"].dtype
        for g, w in zip(got, want))


def test_merged_bytes_unpickle_to_the_sliced_records():
    fmt = PickleFormat()
    batches = [records(k, n) for k, n in enumerate([5, 0, 7, 3])]
    stages = [fmt.encode_stage(b) for b in batches]
    assert all(same(fmt.decode_stage(s), b) for s, b in zip(stages, batches))
    cuts = [(stages[0], 2, 5), (stages[1], 0, 0), (stages[2], 0, 7), (stages[3], 1, 2)]
    merged = fmt.merge_stages(cuts)
    want = batches[0][2:5] + batches[2] + batches[3][1:2]
    got = pickle.loads(merged)
    assert len(got) == count_list_items(merged) and same(got, want)
    assert all(g["twice"][0] is g["twice"][1] for g in got), "references inside a record are kept"
    assert pickle.loads(fmt.merge_stages([])) == []
