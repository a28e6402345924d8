"""Tokens per second on this machine's cores: dask-prep against the ways people tokenize today.

The corpus is ``documents`` of ``benchmarks/workloads.py`` (``.txt.gz`` files of
2-100 KB of English-like text over 30,000 words), ``--mb`` MB of text, and the
same corpus twice over (hard links, ``doubled``). A byte-level BPE of
``--vocab-size`` tokens is trained once on the doubled corpus with ``dask-prep
tokenizer train`` (timed, with the peak RSS of its process tree: the training
figure). Then, each in a fresh process, alternating in rounds (A B C ..., then
the other way round):

- ``loop 1 thread``: ``benchmarks/token_methods.py``'s ``encode_batch`` loop with
  ``RAYON_NUM_THREADS=1``: the baseline every ratio is to;
- ``loop Rust threads``: the same loop with the tokenizer's own threads on every core;
- ``hf-datasets``: ``map(batched=True, num_proc=2)`` + ``to_parquet``;
- ``datatrove``: ``DocumentTokenizer`` on ``LocalPipelineExecutor(tasks=2,
  workers=2)``, in a virtual environment of its own (``datatrove_env.py``;
  datatrove 0.10 and mosaicml-streaming 0.13 disagree on ``huggingface-hub``);
- ``dask-prep parquet`` / ``dask-prep megatron``: ``dask-prep run CORPUS -o OUT
  --tokenizer tok.json --seq-len 2048 --format parquet|megatron --workers 2``
  (tokenize, pack, write);
- ``dask-prep parquet 2x``: the same on the doubled corpus (its RSS should be flat).

Reading and decompressing the gzip files is part of every method's work. A
method's time is the wall time of its whole process (interpreter start, imports,
dask-prep's cluster start and stop included); RSS is the peak of the sum over
its process tree (psutil, sampled every 50 ms). Every output is checked against
the first one-thread loop's stream (``uint32`` ids, documents in sorted-path
order, EOS after each): the unpacked methods must give the same token count and
sha256; dask-prep packs the same stream into ``L``-token sequences and drops the
tail shorter than ``L`` (``--last drop``), so its sequences end to end must be
exactly the first ``n * L`` tokens of that stream (for ``2x``: of the stream
twice over). Tokens/s counts the whole stream for every method. The table is
printed and written to ``benchmarks/results/tokens.md`` (``--results``).

Run from the project root::

    python -m benchmarks.tokens --mb 100 --repeat 3
    python -m benchmarks.tokens --quick     # 2 MB, 1 round: a smoke run
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
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

from benchmarks import datatrove_env, workloads
from benchmarks.suite import tree_rss

HERE = Path(__file__).parent
ROOT = HERE.parent
BASE = "loop 1 thread"
METHODS = (BASE, "loop Rust threads", "hf-datasets", "datatrove", "dask-prep parquet",
           "dask-prep megatron", "dask-prep parquet 2x")
SEQ_LEN = 2048
WORKERS = 2


def _sample(proc: subprocess.Popen, peak: list, stop: threading.Event) -> None:
    """Keep ``peak[0]`` the highest sum of RSS over ``proc``'s process tree."""
    root = psutil.Process(proc.pid)
    while not stop.is_set() and (rss := tree_rss(root)) is not None:
        peak[0] = max(peak[0], sum(rss.values()))
        stop.wait(0.05)


def measured(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """``(wall seconds, peak tree RSS bytes, stdout)`` of ``cmd``; exits on failure."""
    peak, stop = [0], threading.Event()
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        sampler = threading.Thread(target=_sample, args=(proc, peak, stop), daemon=True)
        sampler.start()
        stdout, _ = proc.communicate()
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {err.read()[-2_000:]}")
    return seconds, peak[0], stdout


def _env(**changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(changes)
    return env


def train(corpus: Path, out: Path, vocab_size: int) -> tuple[float, int]:
    """Seconds and peak RSS of ``dask-prep tokenizer train`` on ``corpus``."""
    seconds, rss, _ = measured([_cli(), "tokenizer", "train", str(corpus), "--vocab-size",
                                str(vocab_size), "-o", str(out), "--workers", str(WORKERS)], _env())
    return seconds, rss


def _cli() -> str:
    return str(Path(sys.executable).with_name("dask-prep"))


def command(method: str, corpus: Path, doubled: Path, tok: Path, out: Path, scratch: Path,
            dt_python: str | None) -> tuple[list[str], dict]:
    if method.startswith("dask-prep"):
        fmt = method.split()[1]
        return ([_cli(), "run", str(doubled if method.endswith("2x") else corpus), "-o", str(out),
                 "--tokenizer", str(tok), "--seq-len", str(SEQ_LEN), "--format", fmt,
                 "--workers", str(WORKERS), "-q"], _env())
    job = json.dumps({"root": str(corpus), "out": str(out), "scratch": str(scratch),
                      "tokenizer": str(tok), "workers": WORKERS})
    python, env = sys.executable, _env()
    if method == BASE:
        env["RAYON_NUM_THREADS"] = "1"
    name = {"hf-datasets": "hf-datasets", "datatrove": "datatrove"}.get(method, "loop")
    if method == "datatrove":
        python = dt_python
    return [python, "-m", "benchmarks.token_methods", name, job], env


# -- reading the outputs back --------------------------------------------------------


def _stream(method: str, out: Path):
    """The output's token ids, in order, as ``uint32`` arrays."""
    if method.startswith("loop"):
        yield np.fromfile(out / "ids.bin", np.uint32)
    elif method == "hf-datasets" or method.startswith("dask-prep parquet"):
        for path in sorted(out.glob("*.parquet")):
            col = pq.read_table(path, columns=["input_ids"]).column(0).combine_chunks()
            yield col.flatten().to_numpy().astype(np.uint32)
    elif method == "datatrove":
        for path in sorted(out.glob("*.ds")):
            yield np.fromfile(path, np.uint16).astype(np.uint32)
    else:  # megatron: the dtype code is byte 17 of the .idx
        for path in sorted(out.glob("*.bin")):
            code = path.with_suffix(".idx").read_bytes()[17]
            yield np.fromfile(path, {8: np.uint16, 4: np.int32}[code]).astype(np.uint32)


def fingerprint(method: str, out: Path) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    for ids in _stream(method, out):
        h.update(ids.astype("<u4", copy=False).tobytes())
        n += len(ids)
    return n, h.hexdigest()


def prefix_fingerprint(reference: Path, n: int, copies: int = 1) -> tuple[int, str]:
    """Count and sha256 of the first ``n`` tokens of ``copies`` times the reference stream."""
    h, left = hashlib.sha256(), n * 4
    data = reference.read_bytes()
    for _ in range(copies):
        h.update(data[:left])
        left -= min(left, len(data))
    return n, h.hexdigest()


# -- the table -----------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def table(runs: dict, tokens: dict) -> str:
    base = statistics.median(runs[BASE]["s"])
    rows = ["| method | median s | min s | M tokens/s | × one-thread loop (time per token) | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|"]
    for method, r in runs.items():
        if not r["s"]:
            rows.append(f"| {method} | {r.get('error', 'not run')} | | | | |")
            continue
        med = statistics.median(r["s"])
        rows.append(f"| {method} | {med:.2f} | {min(r['s']):.2f} | {tokens[method] / med / 1e6:.2f} "
                    f"| {med / tokens[method] / (base / tokens[BASE]):.2f} | {_mb(max(r['rss']))} |")
    return "\n".join(rows)


def verdict(runs: dict) -> list[str]:
    med = {m: statistics.median(r["s"]) for m, r in runs.items() if r["s"]}
    lines = []
    for dp in ("dask-prep parquet", "dask-prep megatron"):
        if dp not in med:
            continue
        for m in ("loop Rust threads", "hf-datasets", "datatrove"):
            if m in med:
                lines.append(f"- {dp} faster than {m}: {'yes' if med[dp] < med[m] else 'NO'} "
                             f"({med[dp]:.2f} s against {med[m]:.2f} s)")
        if BASE in med:
            lines.append(f"- {dp} ≤ 0.55 × the one-thread loop: "
                         f"{'yes' if med[dp] <= 0.55 * med[BASE] else 'NO'} ({med[dp] / med[BASE]:.2f} ×)")
    one, two = runs.get("dask-prep parquet", {}).get("rss"), runs.get("dask-prep parquet 2x", {}).get("rss")
    if one and two:
        lines.append(f"- dask-prep peak RSS at 2× the corpus: {_mb(max(one))} MB → {_mb(max(two))} MB "
                     f"({max(two) / max(one):.2f} ×)")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="MB of text in the corpus (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every method (default 3)")
    ap.add_argument("--quick", action="store_true", help="2 MB and 1 round (smoke run)")
    ap.add_argument("--vocab-size", type=int, default=3_000, help="BPE vocabulary (default 3,000)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--data", type=Path, default=HERE / "data",
                    help="where corpora and the datatrove environment are kept (default benchmarks/data/)")
    ap.add_argument("--results", type=Path, default=HERE / "results",
                    help="where tokens.md is written (default benchmarks/results/)")
    ap.add_argument("--out", default=None, help="the folder outputs are written in (default: the "
                    "system's temporary folder)")
    opts = ap.parse_args(argv)
    mb, repeat = (2, 1) if opts.quick else (opts.mb, opts.repeat)
    methods = [BASE] + [m for m in opts.methods if m != BASE]
    corpus = workloads.cached("documents", opts.data, size_mb=mb)
    doubled = workloads.cached("doubled", opts.data, source=corpus)
    load_before = os.getloadavg()
    dt_python, runs = None, {m: {"s": [], "rss": []} for m in methods}
    if "datatrove" in methods:
        try:
            dt_python = str(datatrove_env.venv(opts.data))
        except subprocess.CalledProcessError as exc:
            runs["datatrove"]["error"] = f"its environment could not be made: {exc}"
            methods.remove("datatrove")
    with tempfile.TemporaryDirectory(prefix="tokens-", dir=opts.out) as tmp:
        tmp = Path(tmp)
        tok = tmp / "tok.json"
        train_s, train_rss = train(doubled, tok, opts.vocab_size)
        print(f"tokenizer train on {2 * mb} MB: {train_s:.1f} s, {_mb(train_rss)} MB", file=sys.stderr)
        reference, tokens = tmp / "reference.bin", {}
        for round_ in range(repeat):
            order = methods if round_ % 2 == 0 else methods[::-1]
            for method in order:
                out, scratch = tmp / "out", tmp / "scratch"
                for d in (out, scratch):
                    shutil.rmtree(d, ignore_errors=True)
                    d.mkdir()
                try:
                    seconds, rss, _ = measured(*command(method, corpus, doubled, tok, out, scratch, dt_python))
                except RuntimeError as exc:
                    runs[method]["error"] = str(exc).splitlines()[0][:200]
                    print(f"{method}: FAILED {exc}", file=sys.stderr)
                    continue
                got = fingerprint(method, out)
                if not reference.exists():
                    os.replace(out / "ids.bin", reference)
                total = reference.stat().st_size // 4
                if method.startswith("dask-prep"):
                    copies = 2 if method.endswith("2x") else 1
                    want = prefix_fingerprint(reference, got[0], copies)
                    ok = want == got and total * copies - got[0] < SEQ_LEN
                    tokens[method] = total * copies
                else:
                    want = prefix_fingerprint(reference, total)
                    ok, tokens[method] = want == got, total
                if not ok:
                    raise SystemExit(f"FAIL: {method}'s tokens differ: {got} against {want}")
                runs[method]["s"].append(seconds)
                runs[method]["rss"].append(rss)
                print(f"round {round_ + 1}/{repeat}  {method:<22} {seconds:7.2f} s  {_mb(rss):>6} MB  "
                      f"{got[0]:,} tokens ok", file=sys.stderr)
    load_after = os.getloadavg()
    text = (f"{table(runs, tokens)}\n\n" + "\n".join(verdict(runs)) + "\n\n"
            f"Corpus: {mb} MB of text in {len(list(corpus.rglob('*.txt.gz'))):,} .txt.gz documents "
            f"({total:,} tokens with EOS); BPE of {opts.vocab_size:,} tokens trained on {2 * mb} MB "
            f"by `dask-prep tokenizer train --workers {WORKERS}` in {train_s:.1f} s, peak RSS "
            f"{_mb(train_rss)} MB. {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}; repeat={repeat}{' (--quick)' if opts.quick else ''}; "
            f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.\n")
    print(text)
    opts.results.mkdir(parents=True, exist_ok=True)
    (opts.results / "tokens.md").write_text(text)


if __name__ == "__main__":
    main()
