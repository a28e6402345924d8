"""Elastic resume and multi-rank streaming: ``python -m benchmarks.elastic``.

1. Resume of stored shards at 1 M records: the state's size, and the time from
   ``load_state_dict`` to the first batch, resumed at the same world size (4 -> 4)
   and at another one (4 -> 3, the elastic case), with and without bucketing.
2. ``stream`` batches/s with 1, 2 and 4 consuming ranks (each its own process and
   client) on one LocalCluster of 2 worker processes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.bag as db
import numpy as np

import dask_prep as dp


def dataset(out: Path, n: int) -> dp.ShardSet:
    if not (out / ".manifest.json").exists():
        def part(i, size):
            rng = np.random.default_rng(i)
            return [{"token_ids": rng.integers(1, 30000, rng.integers(4, 64)).astype(np.int32)}
                    for _ in range(size)]
        k = 20
        bag = db.from_sequence(range(k), npartitions=k).map_partitions(lambda p: part(p[0], n // k))
        with dask.config.set(scheduler="processes", num_workers=2):
            dp.write_shards(bag, out, shard_size=10_000, overwrite=True)
    return dp.open(out)


def resume_times(ds, world_from: int, world_to: int, bucket: bool, batches: int = 500) -> dict:
    opts = dict(shuffle=7, bucket_by_length=bucket, shuffle_buffer=20_000, prefetch=0)
    it = ds.iter_batches(64, rank=0, world_size=world_from, **opts)
    for _ in range(batches):
        next(it)
    state = json.dumps(it.state_dict())
    t0 = time.perf_counter()
    new = ds.iter_batches(64, rank=0, world_size=world_to, **opts)
    new.load_state_dict(json.loads(state))
    next(new)
    return {"state_bytes": len(state), "resume_s": time.perf_counter() - t0}


RANK = """
import sys, time, dask_prep as dp
rank, world, address, root, vocab = sys.argv[1:6]
conv = dp.with_token_ids("sentences", dp.Vocab.load(vocab))
t0 = time.perf_counter(); n = 0
with dp.stream(root, converter=conv, batch_size=64, ordered=True, rank=int(rank),
               world_size=int(world), scheduler=address) as st:
    for b in st:
        n += 1
print(n, time.perf_counter() - t0)
"""


def stream_rates(root: Path, vocab: Path, ranks: list[int]) -> dict:
    from distributed import LocalCluster
    out = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as c:
        for w in ranks:
            procs = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(w), c.scheduler_address,
                                       str(root), str(vocab)], stdout=subprocess.PIPE, text=True)
                     for r in range(w)]
            results = [p.communicate()[0].split() for p in procs]
            total = sum(int(n) for n, _ in results)
            wall = max(float(s) for _, s in results)
            out[w] = {"batches": total, "wall_s": wall, "batches_per_s": total / wall}
    return out


def corpus(root: Path, files: int = 400) -> tuple[Path, Path]:
    words = [f"w{i}" for i in range(2000)]
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        text = " ".join(" ".join(rng.choice(words, 12)) + "." for _ in range(200))
        (root / f"d{f:04d}.txt").write_text(text)
    vocab = root.parent / "vocab.json"
    dp.Vocab(["<pad>", "<unk>", *words]).save(vocab)
    return root, vocab


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dask-prep-elastic")
    a = ap.parse_args(argv)
    ds = dataset(a.data / "shards", a.records)
    print(f"dataset: {len(ds):,} records in {len(ds.shards)} shards")
    print("| resume | bucketing | state bytes | load + first batch |")
    print("|---|---|---|---|")
    for wf, wt in ((4, 4), (4, 3), (1, 5)):
        for bucket in (False, True):
            r = resume_times(ds, wf, wt, bucket)
            print(f"| {wf} -> {wt} | {bucket} | {r['state_bytes']} | {r['resume_s'] * 1000:.0f} ms |")
    root, vocab = corpus(a.data / "text")
    print("\n| consuming ranks | batches | wall | batches/s (all ranks) |")
    print("|---|---|---|---|")
    for w, r in stream_rates(root, vocab, [1, 2, 4]).items():
        print(f"| {w} | {r['batches']} | {r['wall_s']:.2f} s | {r['batches_per_s']:.0f} |")


if __name__ == "__main__":
    main()
