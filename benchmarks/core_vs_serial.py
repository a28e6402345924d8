"""dask-prep vs. a plain serial loop, on the Python standard library's .py sources.

Measures the wall time of the same job done three ways, in one run:

- ``serial``: one process discovers the files with ``dask_prep.discover``, converts
  each with the ``sentences`` converter (skipping files that raise) and writes
  parquet shards of exactly 10,000 records with pyarrow;
- ``dask-prep API``: ``dask_prep.run(..., workers=2)``, LocalCluster start-up and
  shutdown included;
- ``dask-prep CLI``: ``dask-prep run ... --workers 2`` as a subprocess (interpreter
  start-up and imports included).

Methods alternate within each round to reduce drift; the table reports the median
and the minimum over the rounds, and the run fails if any method's records differ.
The table is printed and written to ``benchmarks/results/core_vs_serial.md``.

Run from the project root::

    python -m benchmarks.core_vs_serial --repeat 3
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import dask_prep
from dask_prep.cli import demo_inputs
from dask_prep.ingest.converters import sentences

ROOT, EXCLUDE = demo_inputs()
SHARD_SIZE = 10_000
RESULTS = Path(__file__).parent / "results" / "core_vs_serial.md"
CLI = Path(sys.executable).with_name("dask-prep")
API_RUNS: list[tuple[float, float]] = []  # (RunResult.elapsed, write-phase seconds) per API run


def convert_or_skip(path: str) -> list[dict]:
    """The records of one file, or none if converting it raises (as dask-prep skips it)."""
    try:
        return list(sentences(path))
    except Exception:
        return []


def write_shard(records: list[dict], out: str, index: int) -> None:
    pq.write_table(pa.Table.from_pylist(records), os.path.join(out, f"shard-{index:05d}.parquet"))


def run_serial(out: str) -> None:
    """Discover, convert and shard in one process."""
    buf, n = [], 0
    for source in dask_prep.discover(ROOT, suffixes=[".py"], exclude=EXCLUDE):
        buf.extend(convert_or_skip(source.path))
        while len(buf) >= SHARD_SIZE:
            write_shard(buf[:SHARD_SIZE], out, n)
            del buf[:SHARD_SIZE]
            n += 1
    if buf:
        write_shard(buf, out, n)


def run_api(out: str) -> None:
    result = dask_prep.run([ROOT], out, converter="sentences", format="parquet",
                           shard_size=SHARD_SIZE, workers=2, suffixes=[".py"],
                           exclude=EXCLUDE, overwrite=True)
    API_RUNS.append((result.elapsed, result.manifest["run"]["elapsed_seconds"]))


def run_cli(out: str) -> None:
    exclude_file = os.path.join(os.path.dirname(out), "exclude.txt")
    Path(exclude_file).write_text("\n".join(EXCLUDE) + "\n")
    proc = subprocess.run([str(CLI), "run", ROOT, "-o", out, "--converter", "sentences",
                           "--suffix", ".py", "--workers", "2", "--exclude", exclude_file,
                           "--overwrite", "-q"], capture_output=True, text=True)
    if proc.returncode:  # stderr is captured: even -q prints distributed's INFO log lines
        raise SystemExit(f"FAIL: dask-prep CLI exited {proc.returncode}:\n{proc.stderr}")


METHODS = {"serial": run_serial, "dask-prep API": run_api, "dask-prep CLI": run_cli}


def fingerprint(out: str) -> tuple[int, str, list[int]]:
    """(record count, sha256 of the sorted texts, records per shard) of the shards in ``out``."""
    shards = sorted(str(p) for p in Path(out).glob("shard-*.parquet"))
    texts = [t for s in shards for t in pq.read_table(s, columns=["text"]).column("text").to_pylist()]
    digest = hashlib.sha256("\0".join(sorted(texts)).encode()).hexdigest()
    if os.path.exists(os.path.join(out, ".manifest.json")) and len(dask_prep.open(out)) != len(texts):
        raise SystemExit(f"FAIL: manifest of {out} disagrees with its shards")
    return len(texts), digest, [pq.read_metadata(s).num_rows for s in shards]


def check_shard_sizes(name: str, sizes: list[int]) -> None:
    if not sizes or any(n != SHARD_SIZE for n in sizes[:-1]) or not 0 < sizes[-1] <= SHARD_SIZE:
        raise SystemExit(f"FAIL: {name} shard sizes are not exact: {sizes}")


def timed(name: str) -> tuple[float, tuple]:
    """Run one method in a fresh temp directory; return (wall seconds, fingerprint)."""
    with tempfile.TemporaryDirectory(prefix="core_vs_serial-") as tmp:
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        t0 = time.perf_counter()
        METHODS[name](out)
        seconds = time.perf_counter() - t0
        return seconds, fingerprint(out)


def api_breakdown() -> str:
    whole, write = (statistics.median(x) for x in zip(*API_RUNS))
    return (f"dask-prep API, median over runs: RunResult.elapsed {whole:.2f} s, of which write "
            f"phase {write:.2f} s and {whole - write:.2f} s discovery, planning, cluster start/stop")


def check_same(prints: dict[str, tuple]) -> None:
    for name, fp in prints.items():
        check_shard_sizes(name, fp[2])
    if len({fp[:2] for fp in prints.values()}) != 1:
        detail = "\n".join(f"  {n}: {fp[0]} records, sha256 {fp[1][:16]}" for n, fp in prints.items())
        raise SystemExit(f"FAIL: methods produced different records:\n{detail}")


def table(times: dict[str, list[float]], prints: dict[str, tuple]) -> str:
    base = statistics.median(times["serial"])
    rows = [f"| {n} | {statistics.median(t):.2f} | {min(t):.2f} | {prints[n][0]:,} | "
            f"{statistics.median(t) / base:.2f} |" for n, t in times.items()]
    head = "| method | median wall s | min wall s | records | ratio to serial |\n|---|---:|---:|---:|---:|"
    return "\n".join([head, *rows])


def main(argv=None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--repeat", type=int, default=3, help="rounds of every method (default 3)")
    repeat = args.parse_args(argv).repeat
    times, load = {n: [] for n in METHODS}, os.getloadavg()[0]
    for round_ in range(1, repeat + 1):
        prints = {}
        for name in METHODS:
            seconds, prints[name] = timed(name)
            times[name].append(seconds)
            print(f"round {round_}/{repeat}  {name:<14} {seconds:6.2f} s  {prints[name][0]:,} records",
                  file=sys.stderr)
        check_same(prints)
    report = table(times, prints)
    note = (f"\n\n{len(dask_prep.discover(ROOT, suffixes=['.py'], exclude=EXCLUDE)):,} files "
            f"under {ROOT}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
            f"repeat={repeat}; dask-prep with 2 workers; 1-min load average {load:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end\n\n{api_breakdown()}\n")
    print(report + note)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + note)


if __name__ == "__main__":
    main()
