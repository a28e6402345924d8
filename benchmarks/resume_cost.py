"""The cost of resumability on a clean run: dask-prep with and without partition markers.

Every partition task ends with ``dask_prep.write.partition.save_marker(out, result)``, a
small JSON file that lets a killed run resume. This runs the same job, with
``dask_prep.run(..., shard_size=10_000, overwrite=True)`` into a fresh folder,
in two variants alternating within each round (the first one alternates too):

- ``markers``: ``save_marker`` as shipped, wrapped on the workers in a timer that
  adds up the seconds spent inside it (two ``perf_counter`` calls per partition);
- ``no markers``: ``save_marker`` replaced on the workers by a no-op (``client.run``).

on the workloads of ``benchmarks/workloads.py`` (``many-small``: gzip files and
the ``sentences`` converter; ``cpu-heavy``: the ``heavy`` converter), all on one
``LocalCluster`` of 2 single-threaded worker processes started once, so cluster
start-up is not part of the comparison. The sources are discovered once per
workload and passed to ``run``, after one untimed warm-up run on 200 of them. The table gives the median and minimum wall
seconds of each variant, the overhead ``(markers - no markers) / no markers`` of
both, and the seconds measured inside ``save_marker`` (the precise measure: on
a shared 2-core machine the wall-time difference is within noise). The run
fails if the variants' shards differ (sha256 in the manifests). The table is
printed and written to ``benchmarks/results/resume_cost.md``. Corpora are built
on first use under ``--data`` (default ``benchmarks/data/``) and reused.

Run from the project root::

    python -m benchmarks.resume_cost --repeat 5
    python -m benchmarks.resume_cost --quick     # tiny corpora, 1 round: a smoke test
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

import dask_prep
from benchmarks import workloads

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SHARD_SIZE = 10_000
TARGET = 5.0  # percent of wall time
#: name -> (converter, full sizes, --quick sizes)
WORKLOADS = {
    "many-small": ("sentences", {"n_files": 50_000}, {"n_files": 300}),
    "cpu-heavy": (workloads.heavy, {"n_files": 2_000}, {"n_files": 30}),
}
VARIANTS = ("markers", "no markers")


# -- run on the workers with client.run ----------------------------------------


def _original():
    from dask_prep.write import partition as shard
    return getattr(shard.save_marker, "__wrapped__", shard.save_marker)


def _enable_markers() -> None:
    from dask_prep.write import partition as shard
    shard.save_marker = _original()


def _disable_markers() -> None:
    """``save_marker`` becomes a no-op (that counts its calls, to prove it ran)."""
    from dask_prep.write import partition as shard

    def save_marker(out, result):
        save_marker.calls += 1

    save_marker.__wrapped__, save_marker.seconds, save_marker.calls = _original(), 0.0, 0
    shard.save_marker = save_marker


def _time_markers() -> None:
    """``save_marker`` as shipped, adding its seconds and calls to counters on itself."""
    from dask_prep.write import partition as shard
    original = _original()

    def save_marker(out, result):
        t0 = time.perf_counter()
        try:
            original(out, result)
        finally:
            save_marker.seconds += time.perf_counter() - t0
            save_marker.calls += 1

    save_marker.__wrapped__, save_marker.seconds, save_marker.calls = original, 0.0, 0
    shard.save_marker = save_marker


def _marker_stats() -> tuple[float, int]:
    from dask_prep.write import partition as shard
    return getattr(shard.save_marker, "seconds", 0.0), getattr(shard.save_marker, "calls", 0)


# -- client side ---------------------------------------------------------------


def timed(client: Client, variant: str, sources, converter) -> tuple[float, float, dict]:
    """One run in a fresh folder: (wall seconds, marker seconds over workers, manifest)."""
    client.run(_time_markers if variant == "markers" else _disable_markers)
    with tempfile.TemporaryDirectory(prefix="resume_cost-") as tmp:
        t0 = time.perf_counter()
        result = dask_prep.run(sources, os.path.join(tmp, "out"), converter=converter,
                               shard_size=SHARD_SIZE, client=client, overwrite=True)
        seconds = time.perf_counter() - t0
    stats = client.run(_marker_stats).values()
    client.run(_enable_markers)
    calls = sum(c for _, c in stats)
    if calls != result.manifest["partitions"]:
        raise SystemExit(f"FAIL: save_marker ran {calls} times for "
                         f"{result.manifest['partitions']} partitions ({variant})")
    return seconds, sum(s for s, _ in stats), result.manifest


def shard_digests(manifest: dict) -> list[tuple]:
    return [(s["records"], s["sha256"]) for s in manifest["shards"]]


def measure(client: Client, name: str, corpus: Path, converter, repeat: int) -> dict:
    sources = dask_prep.discover(corpus)
    with tempfile.TemporaryDirectory(prefix="resume_cost-") as tmp:  # warm-up, untimed
        dask_prep.run(dask_prep.Sources(sources.items[:200]), os.path.join(tmp, "out"),
                      converter=converter, shard_size=SHARD_SIZE, client=client)
    times = {v: [] for v in VARIANTS}
    marker_s, reference = [], None
    for round_ in range(repeat):
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            seconds, in_markers, manifest = timed(client, variant, sources, converter)
            times[variant].append(seconds)
            if variant == "markers":
                marker_s.append(in_markers)
            reference = reference or manifest
            if shard_digests(manifest) != shard_digests(reference):
                raise SystemExit(f"FAIL: {name}: '{variant}' shards differ from the first run's")
            print(f"{name:<11} round {round_ + 1}/{repeat}  {variant:<10} {seconds:6.2f} s"
                  + (f"  (in save_marker {in_markers * 1000:.1f} ms)" if variant == "markers" else ""),
                  file=sys.stderr)
    return {"times": times, "marker_s": marker_s, "manifest": reference,
            "files": len(sources), "bytes": sources.summary()["bytes"]}


def _pct(a: float, b: float) -> str:
    return f"{(a - b) / b * 100:+.1f}%"


def table(results: dict) -> str:
    head = ("| workload | files | MB on disk | partitions | records | markers median / min s "
            "| no markers median / min s | overhead median / min | in save_marker s per run "
            "| ms per partition | share of wall |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, r in results.items():
        on, off = r["times"]["markers"], r["times"]["no markers"]
        m, nparts = r["manifest"], r["manifest"]["partitions"]
        in_marker = statistics.median(r["marker_s"])
        rows.append(
            f"| {name} | {r['files']:,} | {r['bytes'] / 1e6:.1f} | {nparts} | {m['total_records']:,} "
            f"| {statistics.median(on):.2f} / {min(on):.2f} | {statistics.median(off):.2f} / {min(off):.2f} "
            f"| {_pct(statistics.median(on), statistics.median(off))} / {_pct(min(on), min(off))} "
            f"| {in_marker:.4f} | {in_marker / nparts * 1000:.2f} "
            f"| {in_marker / 2 / statistics.median(on) * 100:.3f}% |")
    return "\n".join([head, *rows])


def main(argv=None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--repeat", type=int, default=5, help="rounds of both variants (default 5)")
    args.add_argument("--quick", action="store_true", help="tiny corpora and 1 round (smoke test)")
    args.add_argument("--data", type=Path, default=HERE / "data",
                      help="where corpora are built and cached (default benchmarks/data/)")
    opts = args.parse_args(argv)
    repeat = 1 if opts.quick else opts.repeat
    corpora = {}
    for name, (_, full, quick) in WORKLOADS.items():
        t0 = time.perf_counter()
        corpora[name] = workloads.cached(name, opts.data, **(quick if opts.quick else full))
        print(f"corpus {corpora[name]} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    load = os.getloadavg()[0]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.run(importlib.import_module, "dask_prep.write.partition")  # pyarrow etc. before any timing
        results = {name: measure(client, name, corpora[name], conv, repeat)
                   for name, (conv, _, _) in WORKLOADS.items()}
        client.run(_enable_markers)
    report = table(results)
    note = (f"\n\n{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; dask-prep "
            f"{dask_prep.__version__}; repeat={repeat}{' (--quick)' if opts.quick else ''}; "
            f"LocalCluster of 2 worker processes x 1 thread; shard_size={SHARD_SIZE:,}, parquet; "
            f"1-min load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end.\n"
            "Overhead = (markers - no markers) / no markers, from the median and from the "
            "minimum wall times. 'In save_marker' is the time spent inside it, summed over both "
            "workers (median over rounds); 'share of wall' divides it by 2 workers and by the "
            f"median wall time of 'markers'. Target: <= {TARGET:g}% of wall time.\n")
    print(report + note)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("resume_cost-quick.md" if opts.quick else "resume_cost.md")).write_text(report + note)


if __name__ == "__main__":
    main()
