"""Feeding training: padding waste, loader speed and memory, streaming vs. storing.

On a real corpus (the Python standard library's .py sources, ``sentences``
converter, ids from a vocabulary built on the cluster), measures:

1. **Padding waste** (padded cells / real tokens) of one epoch of
   ``iter_batches``, with and without ``bucket_by_length``.
2. **Loaders**: batches/s and peak memory (PSS of the process and its
   children) of one epoch from the same Parquet shards, each in a fresh
   process: ``iter_batches`` (background prefetch, and in the caller's thread),
   a plain pyarrow + numpy loop doing the same padding row by row, PyTorch
   ``DataLoader(num_workers=2)`` over a map-style dataset with a padding
   ``collate_fn`` (the usual hand-written loader), and ``to_torch()`` in a
   ``DataLoader`` with 2 workers and with none. Also: a simulated 2 ms
   training step with and without prefetch, the steps alone (the floor), and
   how long the consumer waited for the prefetch thread.
3. **Streaming**: peak memory of ``stream`` over the corpus once and twice
   (flat means bounded), and its time against ``run`` followed by one epoch of
   ``iter_batches``.

Every method must yield the same number of records. Tables are printed and
written to ``benchmarks/results/batches.md``.

Run from the project root (torch rows are skipped without torch)::

    python -m benchmarks.batches --repeat 3
    python -m benchmarks.batches --quick      # a small slice of the corpus, one round (CI smoke)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

import dask_prep as dp
from dask_prep.cli import demo_inputs

ROOT, EXCLUDE = demo_inputs()
RESULTS = Path(__file__).parent / "results" / "batches.md"
BATCH = 64
SHARD_SIZE = 8192  # a multiple of BATCH: the plain loop's batches match iter_batches' exactly
VOCAB_SIZE = 30_000
STEP = 0.002  # the simulated training step, seconds


# -- measuring ------------------------------------------------------------------


class PeakMemory:
    """Peak PSS (MB) of this process and of all its descendants, sampled every 20 ms."""

    def __init__(self):
        self.peak = self.peak_self = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        me = psutil.Process()
        total = own = me.memory_full_info().pss
        for child in me.children(recursive=True):
            try:
                total += child.memory_full_info().pss
            except psutil.Error:
                pass
        self.peak, self.peak_self = max(self.peak, total / 1e6), max(self.peak_self, own / 1e6)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self.base = self.peak
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# -- the loaders (each runs in a fresh process: --child NAME) --------------------


def shard_files(data: str) -> list[str]:
    return dp.open(data).files


def load_iter_batches(data: str, prefetch: int = 2, step: float = 0.0):
    with dp.open(data).iter_batches(BATCH, prefetch=prefetch) as it:
        for batch in it:
            if step:
                time.sleep(step)
            yield len(batch["lengths"])
    load_iter_batches.waited = it.waited if prefetch else None


def load_plain(data: str):
    """What one writes by hand: read a shard, then pad each batch row by row."""
    for f in shard_files(data):
        rows = pq.read_table(f, columns=["token_ids"]).column("token_ids").to_pylist()
        for s in range(0, len(rows), BATCH):
            chunk = rows[s:s + BATCH]
            out = np.zeros((len(chunk), max(map(len, chunk))), np.int32)
            for i, r in enumerate(chunk):
                out[i, :len(r)] = r
            yield len(chunk)


def load_torch_mapstyle(data: str):
    """The usual PyTorch loader: a map-style dataset and a padding collate_fn."""
    import torch
    from torch.nn.utils.rnn import pad_sequence
    from torch.utils.data import DataLoader

    class Sequences(torch.utils.data.Dataset):
        def __init__(self, files):
            self.rows = [np.asarray(r, np.int32) for f in files
                         for r in pq.read_table(f, columns=["token_ids"]).column("token_ids").to_pylist()]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return torch.from_numpy(self.rows[i])

    def collate(seqs):
        return pad_sequence(seqs, batch_first=True), torch.tensor([len(s) for s in seqs])

    loader = DataLoader(Sequences(shard_files(data)), batch_size=BATCH, num_workers=2, collate_fn=collate)
    for ids, lengths in loader:
        yield len(lengths)


def load_to_torch(data: str, workers: int = 2):
    from torch.utils.data import DataLoader
    for batch in DataLoader(dp.open(data).to_torch(BATCH), batch_size=None, num_workers=workers):
        yield len(batch["lengths"])


def step_alone(data: str):
    """The simulated training steps without any loading: the floor for the rows with a step."""
    for _ in range(len(dp.open(data).iter_batches(BATCH))):
        time.sleep(STEP)
        yield 0


LOADERS = {
    "iter_batches (prefetch 2)": lambda d: load_iter_batches(d),
    "iter_batches (prefetch 0)": lambda d: load_iter_batches(d, prefetch=0),
    "plain pyarrow + numpy loop": load_plain,
    "torch DataLoader, 2 workers, map-style + collate": load_torch_mapstyle,
    "to_torch() in DataLoader, 2 workers": load_to_torch,
    "to_torch() in DataLoader, no workers": lambda d: load_to_torch(d, 0),
    f"{STEP * 1000:g} ms step alone, no loading": step_alone,
    f"iter_batches prefetch 2 + {STEP * 1000:g} ms step": lambda d: load_iter_batches(d, step=STEP),
    f"iter_batches prefetch 0 + {STEP * 1000:g} ms step": lambda d: load_iter_batches(d, 0, STEP),
}
TORCH = {name for name in LOADERS if "torch" in name}


def child_loader(name: str, data: str) -> dict:
    if name in TORCH:
        import torch.utils.data  # noqa: F401 - imported before timing: ~1.5 s and ~150 MB of its own
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        batches = LOADERS[name](data)
        sizes = [next(batches)]
        first = time.perf_counter() - t0
        sizes += list(batches)
        seconds = time.perf_counter() - t0
    return {"batches": len(sizes), "records": sum(sizes), "seconds": seconds, "first": first,
            "peak": mem.peak, "base": mem.base, "waited": getattr(load_iter_batches, "waited", None)}


def child_stream(inputs: list[str], vocab: str) -> dict:
    conv = dp.with_token_ids("sentences", dp.Vocab.load(vocab), keep=False)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        n = records = 0
        with dp.stream(inputs, converter=conv, batch_size=BATCH, workers=2, suffixes=[".py"]) as st:
            for batch in st:
                n, records = n + 1, records + len(batch["lengths"])
        seconds = time.perf_counter() - t0
    return {"batches": n, "records": records, "seconds": seconds, "peak": mem.peak,
            "peak_client": mem.peak_self, "base": mem.base}


def child_store(inputs: list[str], vocab: str, out: str) -> dict:
    conv = dp.with_token_ids("sentences", dp.Vocab.load(vocab), keep=False)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        dp.run(inputs, out, converter=conv, shard_size=SHARD_SIZE, workers=2, suffixes=[".py"],
               overwrite=True)
        written = time.perf_counter() - t0
        sizes = [len(b["lengths"]) for b in dp.open(out).iter_batches(BATCH)]
        seconds = time.perf_counter() - t0
    return {"batches": len(sizes), "records": sum(sizes), "seconds": seconds, "written": written,
            "peak": mem.peak, "peak_client": mem.peak_self, "base": mem.base}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.batches", "--child", *args],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    if proc.returncode:
        raise SystemExit(f"FAIL: child {args[0]!r} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- preparing the data -----------------------------------------------------------


def prepare(work: Path, quick: bool) -> tuple[list[Path], Path, Path]:
    """Copy the corpus (twice, for the 2x stream), build the vocabulary, write the shards."""
    sources = dp.discover(ROOT, suffixes=[".py"], exclude=EXCLUDE)
    chosen = list(sources)[:150] if quick else list(sources)
    copies = [work / "corpus1", work / "corpus2"]
    for copy in copies:
        for s in chosen:
            dst = copy / os.path.relpath(s.path, ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.path, dst)
    from dask_prep.runtime.cluster import dask_session
    with dask_session(workers=2):
        t0 = time.perf_counter()
        vocab = dp.build_vocab(dp.to_bag(dp.discover(copies[0]), "sentences"), size=VOCAB_SIZE)
        print(f"vocabulary of {len(vocab):,} built on the cluster in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        vocab.save(work / "vocab.json")
        conv = dp.with_token_ids("sentences", vocab, keep=False)
        dp.run([copies[0]], work / "shards", converter=conv, shard_size=SHARD_SIZE, suffixes=[".py"])
    return copies, work / "vocab.json", work / "shards"


# -- the tables --------------------------------------------------------------------


def waste_table(data: Path) -> str:
    ds = dp.open(data)
    rows = ["| batch size | max_len | bucketing | batches | real tokens | padded cells | waste (cells/tokens) |",
            "|---:|---:|---|---:|---:|---:|---:|"]
    for batch in (32, 128):
        for max_len in (None, 256):
            for bucket in (False, True):
                cells = tokens = n = 0
                for b in ds.iter_batches(batch, shuffle=0, bucket_by_length=bucket, max_len=max_len):
                    cells, tokens, n = cells + b["token_ids"].size, tokens + int(b["lengths"].sum()), n + 1
                rows.append(f"| {batch} | {max_len or '-'} | {'yes' if bucket else 'no'} | {n:,} | "
                            f"{tokens:,} | {cells:,} | {cells / tokens:.2f} |")
    return "\n".join(rows)


def loader_table(data: Path, repeat: int) -> str:
    names = [n for n in LOADERS if n not in TORCH or has_torch()]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for round_ in range(repeat):
        for name in names:
            runs[name].append(run_child("loader", name, str(data)))
            r = runs[name][-1]
            print(f"round {round_ + 1}/{repeat}  {name:<50} {r['seconds']:6.2f} s", file=sys.stderr)
    check_records({n: rs[0]["records"] for n, rs in runs.items() if "alone" not in n})
    rows = ["| loader | batches | median s | batches/s | first batch s | peak MB (tree) | MB over start "
            "| waited s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        peak = statistics.median(r["peak"] for r in rs)
        base = statistics.median(r["base"] for r in rs)
        waited = statistics.median(r["waited"] for r in rs) if rs[0]["waited"] is not None else None
        first = statistics.median(r["first"] for r in rs)
        rows.append(f"| {name} | {rs[0]['batches']:,} | {sec:.2f} | {rs[0]['batches'] / sec:,.0f} | "
                    f"{first:.3f} | {peak:,.0f} | {peak - base:,.0f} | "
                    f"{'-' if waited is None else f'{waited:.2f}'} |")
    return "\n".join(rows)


def stream_table(copies: list[Path], vocab: Path, work: Path) -> str:
    runs = {"stream, corpus x1": run_child("stream", str(vocab), str(copies[0])),
            "stream, corpus x2": run_child("stream", str(vocab), str(copies[0]), str(copies[1])),
            "run + iter_batches, corpus x1": run_child("store", str(vocab), str(work / "stored"),
                                                       str(copies[0])),
            "run + iter_batches, corpus x2": run_child("store", str(vocab), str(work / "stored2"),
                                                       str(copies[0]), str(copies[1]))}
    for name, r in runs.items():
        print(f"{name:<32} {r['seconds']:6.2f} s", file=sys.stderr)
    check_records({n: r["records"] * (1 if "x2" in n else 2) for n, r in runs.items()})
    rows = ["| method | records | seconds | records/s | batches/s | peak MB client | peak MB (client + workers) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        extra = f" (of which run {r['written']:.2f} s)" if "written" in r else ""
        rows.append(f"| {name} | {r['records']:,} | {r['seconds']:.2f}{extra} | "
                    f"{r['records'] / r['seconds']:,.0f} | {r['batches'] / r['seconds']:,.0f} | "
                    f"{r['peak_client']:,.0f} | {r['peak']:,.0f} |")
    return "\n".join(rows)


def check_records(counts: dict[str, int]) -> None:
    if len(set(counts.values())) != 1:
        raise SystemExit(f"FAIL: methods saw different record counts: {counts}")


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def child_main(args: list[str]) -> None:
    kind, rest = args[0], args[1:]
    if kind == "loader":
        result = child_loader(rest[0], rest[1])
    elif kind == "stream":
        result = child_stream(rest[1:], rest[0])
    else:
        result = child_store(rest[2:], rest[0], rest[1])
    print(json.dumps(result))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every loader (default 3)")
    parser.add_argument("--quick", action="store_true", help="150 files, one round: a smoke test")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-batches-") as tmp:
        work = Path(tmp)
        copies, vocab, data = prepare(work, args.quick)
        ds = dp.open(data)
        sections = [
            f"## Padding waste (one epoch, shuffle=0, shuffle_buffer = one shard of {SHARD_SIZE:,})\n\n"
            + waste_table(data),
            f"## Loaders (one epoch, batch {BATCH}, no shuffle; median of {repeat})\n\n"
            + loader_table(data, repeat),
            "## Streaming vs storing (2 local workers, cluster start included)\n\n"
            + stream_table(copies, vocab, work),
        ]
        note = (f"\n\nCorpus: {len(dp.discover(copies[0])):,} .py files of {ROOT}"
                f"{' (first 150: --quick)' if args.quick else ''}, sentences converter, "
                f"{len(ds):,} records in {len(ds.shards)} Parquet shards of {SHARD_SIZE:,}; "
                f"vocabulary of {VOCAB_SIZE:,}. {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
                f"1-min load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end. Memory is "
                "PSS (shared pages split between processes), sampled every 20 ms.\n")
    report = "\n\n".join(sections) + note
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)


if __name__ == "__main__":
    main()
