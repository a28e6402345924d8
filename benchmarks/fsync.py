"""The cost of durability: dask-prep with and without fsync, on many small files.

Every file dask-prep writes into a local output (shards, staged leftovers,
partition markers, ``.errors.jsonl``, the manifest) is fsynced before its
rename, and the output folder before and after the manifest is written
(``dask_prep.write.output.OutputDir.fsync``). This runs the same job,
``dask_prep.run(sources, OUT, converter="sentences", shard_size=S)`` into a
fresh folder, in two variants alternating within each round:

- ``fsync``: as shipped;
- ``no fsync``: ``OutputDir.fsync = False`` in this process and on the workers
  (``client.run``).

The workload is ``many-small`` of ``benchmarks/workloads.py`` (gzip files, a
few KiB each), written with small shards so that the run writes many files:
the case where fsync costs most. One ``LocalCluster`` of 2 single-threaded
worker processes is started once, so its start-up is not compared. The run
fails if the variants' shards differ (sha256 in the manifests). The table is
printed and written to ``benchmarks/results/fsync.md``.

Run from the project root::

    python -m benchmarks.fsync --repeat 5
    python -m benchmarks.fsync --quick     # tiny corpus, 1 round: a smoke test
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

import dask_prep
from benchmarks import workloads
from dask_prep.write.output import OutputDir

HERE = Path(__file__).parent
VARIANTS = ("fsync", "no fsync")


def _set_fsync(on: bool) -> None:
    from dask_prep.write.output import OutputDir
    OutputDir.fsync = on


def timed(client: Client, variant: str, sources, shard_size: int, where: str) -> tuple[float, dict, int]:
    on = variant == "fsync"
    client.run(_set_fsync, on)
    _set_fsync(on)
    with tempfile.TemporaryDirectory(prefix="fsync-", dir=where) as tmp:
        t0 = time.perf_counter()
        result = dask_prep.run(sources, os.path.join(tmp, "out"), converter="sentences",
                               shard_size=shard_size, client=client)
        seconds = time.perf_counter() - t0
        files = len(os.listdir(os.path.join(tmp, "out")))
    return seconds, result.manifest, files


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="rounds of both variants (default 5)")
    ap.add_argument("--quick", action="store_true", help="tiny corpus and 1 round (smoke test)")
    ap.add_argument("--files", type=int, default=20_000, help="source files (default 20,000)")
    ap.add_argument("--shard-size", type=int, default=500, help="records per shard (default 500)")
    ap.add_argument("--data", type=Path, default=HERE / "data",
                    help="where corpora are built and cached (default benchmarks/data/)")
    ap.add_argument("--out", default=None, help="the folder the outputs are written in (default: the "
                    "system's temporary folder; give one on the disk you care about)")
    opts = ap.parse_args(argv)
    repeat, n_files = (1, 300) if opts.quick else (opts.repeat, opts.files)
    corpus = workloads.cached("many-small", opts.data, n_files=n_files)
    sources = dask_prep.discover(corpus)
    times = {v: [] for v in VARIANTS}
    reference, files = None, 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        timed(client, "fsync", dask_prep.Sources(sources.items[:200]), opts.shard_size, opts.out)  # warm-up
        for round_ in range(repeat):
            for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
                seconds, manifest, files = timed(client, variant, sources, opts.shard_size, opts.out)
                times[variant].append(seconds)
                digests = [s["sha256"] for s in manifest["shards"]]
                reference = reference or digests
                if digests != reference:
                    raise SystemExit(f"FAIL: '{variant}' shards differ from the first run's")
                print(f"round {round_ + 1}/{repeat}  {variant:<8} {seconds:6.2f} s", file=sys.stderr)
        client.run(_set_fsync, True)
    _set_fsync(True)
    on, off = times["fsync"], times["no fsync"]
    ratios = sorted(a / b for a, b in zip(on, off))
    table = ("| files in | shards out | fsync median / min s | no fsync median / min s "
             "| fsync / no fsync, pair by pair (median, range) |\n|---:|---:|---:|---:|---:|\n"
             f"| {len(sources):,} | {len(reference):,} | {statistics.median(on):.2f} / {min(on):.2f} "
             f"| {statistics.median(off):.2f} / {min(off):.2f} "
             f"| {statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}) |")
    note = (f"\n\n{os.cpu_count()} CPUs; dask-prep {dask_prep.__version__}; repeat={repeat}"
            f"{' (--quick)' if opts.quick else ''}; shard_size={opts.shard_size:,}; outputs under "
            f"{opts.out or tempfile.gettempdir()}; {files} entries in the output folder.\n")
    print(table + note)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "fsync.md").write_text(table + note)
    assert OutputDir.fsync


if __name__ == "__main__":
    main()
