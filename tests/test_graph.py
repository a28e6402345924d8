"""The one module that knows Dask's graph internals (dask_prep/runtime/graph.py).

CI runs this file against the oldest dask the project supports as well as the
newest (see .ci/run), so a change in Dask's graph internals shows here first.
"""
import dask
import dask.bag as db
import pytest

import dask_prep as dp
from dask_prep.runtime.graph import conversion_layers, culled, fused_tasks, is_conversion
from helpers import write


@pytest.fixture
def bag(tmp_path):
    for i in range(3):
        write(tmp_path / f"f{i}.txt", f"Doc {i} one. Doc {i} two.")
    return dp.to_bag([tmp_path], "sentences", partition_size=4200)


def test_a_conversion_is_found_by_its_tag_not_its_name(bag):
    layers = conversion_layers(bag)
    assert list(layers) == [bag.name] and is_conversion(bag)
    meta = layers[bag.name]
    assert len(meta["partitions"]) == bag.npartitions == 3 and len(meta["identity"]) == 64
    mapped = bag.map(lambda r: r["text"])
    assert bag.name in conversion_layers(mapped) and not is_conversion(mapped)
    renamed = db.Bag(bag.dask, bag.name, bag.npartitions)
    assert is_conversion(renamed)
    plain = db.from_sequence([1, 2], npartitions=1)
    assert conversion_layers(plain) == {} and not is_conversion(plain)


def test_fused_tasks_call_the_conversion_inline_or_depend_on_one_partition(bag):
    def count(part, i, extra):
        return (i, extra, sum(1 for _ in part))

    inline = fused_tasks(bag, count, "count", [(i,) for i in range(3)], "x")
    assert dask.compute(*inline, scheduler="sync") == ((0, "x", 2), (1, "x", 2), (2, "x", 2))
    assert all(len(dict(t.dask)) == 1 for t in culled(inline)), "one task a partition"
    mapped = bag.map(lambda r: r["text"]).filter(lambda t: "one" in t)
    chained = fused_tasks(mapped, count, "count2", [(i,) for i in range(3)], "y")
    assert dask.compute(*chained, scheduler="sync") == ((0, "y", 1), (1, "y", 1), (2, "y", 1))
    sizes = [len(dict(t.dask)) for t in culled(chained)]
    assert sizes[0] < len(dict(chained[0].dask)), "each task carries only its own partition's graph"


def test_fused_tasks_run_in_partition_order_first(bag):
    tasks = fused_tasks(bag, lambda part, i: i, "order", [(i,) for i in range(3)])
    (priority,) = {id(a): a for t in tasks for layer in t.dask.layers.values()
                   for a in [(layer.annotations or {}).get("priority")] if a is not None}.values()
    ranks = [priority(("order", i)) if callable(priority) else priority[("order", i)] for i in range(3)]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == 3
