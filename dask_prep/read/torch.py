"""PyTorch adapter: a dataset's padded batches as a ``torch.utils.data.IterableDataset``.

torch is optional (``pip install "dask-prep[torch]"``; the CPU build is
enough) and imported only when :func:`to_torch` is called. Batches are already
batched: use ``DataLoader(ds, batch_size=None, num_workers=N)``. Each DataLoader
worker reads its own part: with ``N`` workers on rank ``r`` of ``world_size``,
worker ``w`` reads part ``r * N + w`` of ``world_size * N``, so the workers of
all ranks together read every record exactly once per epoch. The dataset has
``state_dict``/``load_state_dict``, so ``torchdata``'s ``StatefulDataLoader``
(``pip install torchdata``) resumes it mid-epoch exactly, workers included.

>>> import dask_prep as dp                                     # doctest: +SKIP
>>> from torch.utils.data import DataLoader                    # doctest: +SKIP
>>> data = dp.open("out/").to_torch(64, shuffle=0)            # doctest: +SKIP
>>> for epoch in range(3):                                     # doctest: +SKIP
...     data.set_epoch(epoch)
...     for batch in DataLoader(data, batch_size=None, num_workers=2):
...         batch["token_ids"], batch["lengths"]   # int32 tensors [B, L] and [B]
"""
from __future__ import annotations

import functools
import importlib

from .batches import BatchOptions, default_column, iter_batches

__all__ = ["to_torch"]


def _torch():
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise ImportError("to_torch needs PyTorch: pip install 'dask-prep[torch]' "
                          "(or pip install torch; the CPU build is enough)") from None


@functools.cache
def _dataset_class():
    torch = _torch()

    class ShardBatches(torch.utils.data.IterableDataset):
        """Padded batches of a :class:`~dask_prep.ShardSet` as torch tensors."""

        def __init__(self, shardset, batch_size: int, options: dict):
            super().__init__()
            self.shardset, self.batch_size, self.options = shardset, batch_size, dict(options)
            self._passes = 0  # passes made by this copy inside a (persistent) DataLoader worker
            self._pass = 0    # the pass the current iterator belongs to
            self._batches = None  # the current BatchIterator
            self._resume = None   # a state to continue from at the next iteration
            BatchOptions(batch_size, **self.options)  # validate now, not in a worker

        def state_dict(self) -> dict:
            """Where this copy is (in a DataLoader worker: that worker's part), for
            ``torchdata.stateful_dataloader.StatefulDataLoader``, which calls it in
            each worker and hands each worker its own state back on resume."""
            it = self._batches
            return {"pass": self._pass, "batches": it.state_dict() if it is not None else self._resume}

        def load_state_dict(self, state: dict) -> None:
            """Continue from ``state`` at the next iteration."""
            self._passes, self._resume = state["pass"], state["batches"]

        def set_epoch(self, epoch: int) -> None:
            """Reshuffle for ``epoch`` (call before each epoch, as with DistributedSampler).

            Persistent DataLoader workers keep the copy they started with; there
            each pass advances the epoch by one on its own.
            """
            self.options["epoch"] = epoch

        def _part(self) -> dict:
            info = torch.utils.data.get_worker_info()
            opts = dict(self.options)
            if info is not None:
                rank, world = opts.get("rank", 0), opts.get("world_size", 1)
                opts.update(rank=rank * info.num_workers + info.id, world_size=world * info.num_workers,
                            epoch=opts.get("epoch", 0) + self._passes)
                self._pass = self._passes
                self._passes += 1
            return opts

        def __iter__(self):
            with iter_batches(self.shardset, self.batch_size, **self._part()) as batches:
                if self._resume is not None:
                    batches.load_state_dict(self._resume)
                    self._resume = None
                self._batches = batches
                for batch in batches:
                    yield {k: torch.from_numpy(v) if v.dtype.kind in "biuf" else v.tolist()
                           for k, v in batch.items()}

        def __reduce__(self):
            return _rebuild, (self.shardset, self.batch_size, self.options)

    return ShardBatches


def _rebuild(shardset, batch_size: int, options: dict):
    return _dataset_class()(shardset, batch_size, options)


def to_torch(shardset, batch_size: int, **options):
    """An ``IterableDataset`` of the padded batches :func:`~dask_prep.batches.iter_batches` gives.

    ``options`` are those of ``iter_batches``. Tensors share memory with the
    numpy batches (no copy).
    """
    return _dataset_class()(shardset, batch_size, {"column": default_column(shardset), **options})
