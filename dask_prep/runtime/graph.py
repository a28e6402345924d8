"""The one module that knows Dask's graph internals.

dask-prep builds two kinds of graph on top of a bag: a conversion layer (one
task a partition, made by :func:`dask_prep.to_bag`), tagged so that it is
found by what it is, not by its name; and one consuming task per partition
(the shard writer, the stream's packer), fused with the bag's chain so that
records stream from the converter into the consumer inside one task and never
leave the worker.

>>> import dask.bag as db
>>> bag = db.from_sequence([1, 2, 3], npartitions=2)
>>> [d.compute(scheduler="sync") for d in fused_tasks(bag, sum, "total", [(), ()])]
[3, 3]
"""
from __future__ import annotations

from collections.abc import Callable

import dask
import dask.bag as db
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.optimization import cull

__all__ = ["conversion_bag", "conversion_layers", "is_conversion", "fused_tasks", "culled"]

#: The collection annotation that marks a conversion layer and carries its identity.
TAG = "dask_prep.conversion"


def conversion_bag(name: str, tasks: dict, npartitions: int, identity: dict) -> db.Bag:
    """A bag of one layer of conversion ``tasks`` keyed ``(name, i)``, tagged with ``identity``."""
    layer = MaterializedLayer(tasks, collection_annotations={TAG: identity})
    return db.Bag(HighLevelGraph({name: layer}, {name: set()}), name, npartitions)


def conversion_layers(bag: db.Bag) -> dict[str, dict]:
    """The conversion layers in ``bag``'s graph: layer name -> identity."""
    found = {}
    for name, layer in bag.dask.layers.items():
        meta = (getattr(layer, "collection_annotations", None) or {}).get(TAG)
        if meta is not None:
            found[name] = meta
    return found


def is_conversion(bag: db.Bag) -> bool:
    """True for a bag straight from a conversion (nothing mapped on top)."""
    return list(bag.dask.layers) == [bag.name] and bag.name in conversion_layers(bag)


def fused_tasks(bag: db.Bag, fn: Callable, name: str, args: list, *common) -> list[Delayed]:
    """One delayed ``fn(partition, *args[i], *common)`` per partition ``i``, fused
    with the bag's chain into one task, partitions prioritized in order.

    A bag straight from a conversion has one task a partition, which the new
    task calls inline (``fn`` gets the conversion's result itself). Otherwise
    the partition's key is the argument, so each task depends only on its
    partition: a linear chain that Bag's optimizer fuses.
    """
    keys = [(bag.name, i) for i in range(bag.npartitions)]
    inline = is_conversion(bag)
    layer = bag.dask.layers[bag.name] if inline else None
    parts = [layer[k] for k in keys] if inline else keys
    dsk = {(name, i): (fn, part, *args[i], *common) for i, part in enumerate(parts)}
    with dask.annotate(priority=lambda key: -key[1]):
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[] if inline else [bag])
        return db.Bag(graph, name, len(parts)).to_delayed(optimize_graph=True)


def culled(tasks: list[Delayed]) -> list[Delayed]:
    """Each delayed with only its own part of the graph (cheap to submit one by one)."""
    whole = dict(tasks[0].dask) if tasks else {}
    return [Delayed(t.key, cull(whole, [t.key])[0]) for t in tasks]
