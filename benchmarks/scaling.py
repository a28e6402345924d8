"""How the client's cost grows with the corpus: ``python -m benchmarks.scaling``.

1. Many small files (25,000, 100,000, 400,000 by default): discovery and
   planning time, the Python memory they hold per source (``tracemalloc``),
   and, up to ``--run-max`` files, a whole run (wall time, the client's peak
   RSS, the manifest's size).
2. Many partitions (``--partitions``, 20,000 by default, a trivial converter on
   two workers): the client's time per finished partition (progress, markers,
   early merges, error checks: ``WriteJob._finished``) from the first thousand to
   the last, and the client thread's CPU per partition over the whole run.

The files are tiny and made once under ``--data`` (a hidden ``.complete`` marks a
finished folder). Figures are printed as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import dask.bag as db
from distributed import Client, LocalCluster

import dask_prep as dp
from dask_prep.ingest.plan import plan_partitions
from dask_prep.ingest.sources import discover
from dask_prep.write import job as job_module

PER_FOLDER = 25_000


def corpus(data: Path, n: int) -> list[Path]:
    """``n`` tiny text files in folders of 25,000 (made once)."""
    folders = []
    for f in range(-(-n // PER_FOLDER)):
        d = data / f"f{f:03d}"
        if not (d / ".complete").exists():
            d.mkdir(parents=True, exist_ok=True)
            for i in range(PER_FOLDER):
                (d / f"doc{i:05d}.txt").write_text(f"Doc {f} {i} says hello. It ends here.\n")
            (d / ".complete").write_text("")
        folders.append(d)
    return folders


def discovery(folders: list[Path]) -> dict:
    t0 = time.perf_counter()
    sources = discover([str(f) for f in folders])
    t1 = time.perf_counter()
    parts = plan_partitions(sources)
    t2 = time.perf_counter()
    del parts
    tracemalloc.start()
    sources = discover([str(f) for f in folders])
    held = tracemalloc.get_traced_memory()[0]
    parts = plan_partitions(sources)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"sources": len(sources), "discover_s": round(t1 - t0, 3), "plan_s": round(t2 - t1, 3),
            "per_source_us": round((t2 - t0) / len(sources) * 1e6, 2),
            "bytes_per_source_held": round(held / len(sources)), "bytes_per_source_peak": round(peak / len(sources)),
            "partitions": len(parts)}


def whole_run(folders: list[Path], out: Path, workers: int) -> dict:
    t0 = time.perf_counter()
    res = dp.run([str(f) for f in folders], out, converter="lines", shard_size=10_000, workers=workers,
                 overwrite=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    manifest = next(p for p in (out / ".manifest.json", out / "manifest.json") if p.exists())
    listed = next((p for p in (out / ".sources.jsonl", out / ".sources.jsonl") if p.exists()), None)
    return {"wall_s": round(wall, 2), "records": res.records, "client_peak_rss_mb": round(rss / 2**20),
            "manifest_bytes": manifest.stat().st_size,
            "sources_file_bytes_per_source": round(listed.stat().st_size / res.sources) if listed else None}


def many_partitions(n: int, out: Path, workers: int) -> dict:
    """Time the client's handling of each finished partition."""
    spent: list[float] = []
    original = job_module.WriteJob._finished

    def timed(self, result):
        t = time.perf_counter()
        try:
            return original(self, result)
        finally:
            spent.append(time.perf_counter() - t)

    bag = db.from_sequence(range(n * 5), npartitions=n).map(lambda i: {"i": i})
    job_module.WriteJob._finished = timed
    try:
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster):
            c0, t0 = time.thread_time(), time.perf_counter()
            dp.write_shards(bag, out, shard_size=1_000, overwrite=True)
            cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
    finally:
        job_module.WriteJob._finished = original
    first, last = spent[:1000], spent[-1000:]
    return {"partitions": n, "wall_s": round(wall, 1),
            "finished_us_first_1000": round(statistics.median(first) * 1e6, 1),
            "finished_us_last_1000": round(statistics.median(last) * 1e6, 1),
            "finished_us_mean": round(statistics.fmean(spent) * 1e6, 1),
            "client_thread_cpu_ms_per_partition": round(cpu / n * 1e3, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dask-prep-scaling")
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000, 400_000])
    ap.add_argument("--run-max", type=int, default=100_000, help="whole runs up to this many files")
    ap.add_argument("--partitions", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--whole-run", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.whole_run:
        print(json.dumps(whole_run(corpus(a.data, a.whole_run), a.data / f"out-{a.whole_run}", a.workers)))
        return
    report: dict = {"files": [], "cpus": os.cpu_count()}
    for n in a.sizes:
        folders = corpus(a.data, n)
        row = discovery(folders)
        if n <= a.run_max:  # in a fresh process, so its peak RSS is the run's own
            cmd = [sys.executable, "-m", "benchmarks.scaling", "--whole-run", str(n), "--data", str(a.data),
                   "--workers", str(a.workers)]
            row |= json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        report["files"].append(row)
        print(json.dumps(row), file=sys.stderr)
    if a.partitions:
        report["partitions"] = many_partitions(a.partitions, a.data / "out-partitions", a.workers)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
