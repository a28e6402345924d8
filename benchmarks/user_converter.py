"""A user's converter on many small gzip files, pickle and Parquet shards:
``python -m benchmarks.user_converter [--files 21000] [--rounds 3]``.

The workload of a real user report: ~21,000 man-page-like documents, gzip
compressed (about 1.7 KB each), a converter from the user's own file
(``benchmarks/userconv/conv.py:convert``) and 10,000-record shards, against a
plain serial loop that writes the same shards. Runs alternate (A B A B ...)
and each dask-prep run is reported as a ratio to the serial run of its round.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CONV = HERE / "userconv" / "conv.py"
SERIAL = f"""
import pickle, sys, glob
sys.path.insert(0, {str(CONV.parent)!r})
from conv import convert
root, out = sys.argv[1:3]
buf, k = [], 0
for path in sorted(glob.glob(root + "/**/*.gz", recursive=True)):
    buf += convert(path)
    while len(buf) >= 10000:
        with open(f"{{out}}/shard-{{k:05d}}.pkl", "wb") as f:
            pickle.dump(buf[:10000], f, protocol=5)
        buf, k = buf[10000:], k + 1
if buf:
    with open(f"{{out}}/shard-{{k:05d}}.pkl", "wb") as f:
        pickle.dump(buf, f, protocol=5)
"""

SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"]


def make_corpus(root: Path, files: int) -> None:
    """Man-page-like documents: sections of short sentences, gzip compressed."""
    ready = root / f".complete-{files}-v2"
    if ready.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    words = [f"{w}" for w in ("file", "option", "the", "print", "value", "set", "use", "mode", "line",
                               "output", "input", "default", "when", "is", "a", "of", "to", "with")]
    for i in range(files):
        d = root / f"man{i % 9 + 1}"
        d.mkdir(parents=True, exist_ok=True)
        parts = []
        for s in SECTIONS:
            n = int(rng.integers(6, 13))  # ~55 sentences a document, as in the user's corpus
            sentences = [" ".join(rng.choice(words, int(rng.integers(4, 14)))).capitalize() + "."
                         for _ in range(n)]
            parts.append(f"{s}\n       " + " ".join(sentences))
        (d / f"cmd{i:05d}.{i % 9 + 1}.gz").write_bytes(gzip.compress("\n\n".join(parts).encode(), 6))
    ready.touch()


def timed(cmd: list) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=21_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dask-prep-userconv")
    a = ap.parse_args(argv)
    root = a.data / "corpus"
    make_corpus(root, a.files)
    methods = {
        "serial loop": None,
        "dask-prep --workers 1 --format pickle": ["--workers", "1", "--format", "pickle"],
        "dask-prep --workers 1 --format parquet": ["--workers", "1", "--format", "parquet"],
        "dask-prep --workers 2 --format pickle": ["--workers", "2", "--format", "pickle"],
        "dask-prep --workers 2 --format parquet": ["--workers", "2", "--format", "parquet"],
    }
    walls: dict = {m: [] for m in methods}
    ratios: dict = {m: [] for m in methods}
    for _ in range(a.rounds):
        for m, args in methods.items():
            out = a.data / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            if args is None:
                wall = timed([sys.executable, "-c", SERIAL, str(root), str(out)])
                serial = wall
            else:
                wall = timed([sys.executable, "-m", "dask_prep.cli", "run", str(root), "-o", str(out),
                              "--converter", f"{CONV}:convert", "-q", *args])
            walls[m].append(wall)
            ratios[m].append(wall / serial)
    print(f"{a.files:,} files, {a.rounds} rounds (median)")
    print("| run | wall | ratio to serial |\n|---|---|---|")
    for m in methods:
        print(f"| {m} | {statistics.median(walls[m]):.2f} s | {statistics.median(ratios[m]):.2f} |")


if __name__ == "__main__":
    main()
