"""A user's ``.map``/``.filter`` before writing: ``python -m benchmarks.after_map``.

The same one big JSON-lines file written three ways, each in a fresh process
with its own one-worker cluster (so the worker's peak RSS is that run's own),
alternating A B C A B C: straight from ``to_bag``; after ``.map`` (a field
added to each record); after ``.map`` and ``.filter``. Reports the wall time,
the worker's peak RSS and each path's ratio to the direct one (per round, then
the median), as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.workloads import cached

PATHS = ("direct", "map", "map+filter")


def add_length(rec: dict) -> dict:
    return {**rec, "chars": len(rec["text"])}


def long_enough(rec: dict) -> bool:
    return rec["chars"] >= 400


def one(path: str, corpus: Path, out: Path) -> dict:
    import resource

    from distributed import Client, LocalCluster

    import dask_prep as dp
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as c:
        t0 = time.perf_counter()
        bag = dp.to_bag([str(corpus)], converter="jsonl")
        if path != "direct":
            bag = bag.map(add_length)
        if path == "map+filter":
            bag = bag.filter(long_enough)
        m = dp.write_shards(bag, out, shard_size=10_000, overwrite=True)
        wall = time.perf_counter() - t0
        rss = max(c.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values()) * 1024
    return {"path": path, "wall_s": round(wall, 2), "worker_peak_rss_mb": round(rss / 2**20),
            "records": m.total_records}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dask-prep-bench")
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", choices=PATHS, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    corpus = cached("one-big-file", a.data, size_mb=a.size_mb)
    if a.one:
        print(json.dumps(one(a.one, corpus, a.data / f"after-map-{a.one}")))
        return
    rounds = []
    for _ in range(a.rounds):
        rows = {}
        for p in PATHS:
            cmd = [sys.executable, "-m", "benchmarks.after_map", "--one", p, "--data", str(a.data),
                   "--size-mb", str(a.size_mb)]
            rows[p] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rounds.append(rows)
        print(json.dumps(rows), file=sys.stderr)
    report = {p: {"wall_s_median": statistics.median(r[p]["wall_s"] for r in rounds),
                  "worker_peak_rss_mb_max": max(r[p]["worker_peak_rss_mb"] for r in rounds),
                  "ratio_to_direct_median": round(statistics.median(
                      r[p]["wall_s"] / r["direct"]["wall_s"] for r in rounds), 3)} for p in PATHS}
    report["size_mb"] = a.size_mb
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
