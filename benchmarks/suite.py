"""dask-prep against the tools people use today, on five workloads, in one run.

For each workload the suite builds its corpus (once, cached under ``--data``),
then runs every method of ``benchmarks/methods.py`` ``--repeat`` times, each
run in a fresh interpreter whose process tree is sampled for resident memory
every 50 ms, with the corpus read once beforehand so every run starts with it in
the page cache. Cluster start-up and shutdown are also timed on their own, in
one more fresh interpreter after each dask-prep run. After each run it fingerprints the output (``benchmarks/check.py``)
and fails if two methods produced different records. It prints one table per
workload (median and minimum wall seconds, the ratio to the serial loop, peak
RSS of the whole process tree, records, output files) and checks the targets,
then writes ``suite.md``, ``suite.png`` and the raw ``suite.json`` under
``--results``. Method order rotates from round to round, to spread drift.

Workloads: ``many-small`` (gzip files of 0.3-5 KB, ``sentences``), ``cpu-heavy``
(10-30 KB files, the ``heavy`` converter), ``skewed`` (0.5 KB - 8 MB files,
``sentences``), ``one-big-file`` (one JSON-lines file, ``jsonl``) and
``bigger-than-memory`` (dask-prep alone, with a low worker ``memory_limit``,
on a corpus and on that corpus doubled).

Run from the project root (``pip install -e ".[bench]"`` first)::

    python -m benchmarks                  # full sizes, 3 rounds (about 40 minutes on 2 cores)
    python -m benchmarks --quick          # tiny corpora, 1 round: a smoke test
    python -m benchmarks -w skewed -w one-big-file --repeat 5 --scale 0.5
"""
from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import datatrove_env, workloads
from .check import Fingerprint, fingerprint

HERE = Path(__file__).parent
ROOT = HERE.parent
METHODS = ("serial", "static-mp", "pool-imap", "naive-dask", "hf-datasets", "datatrove", "dask-prep",
           "dask-prep/partition")
SHARD_SIZE = 10_000
BTM = "bigger-than-memory"


@dataclass(frozen=True)
class Workload:
    name: str
    corpus: str                      # a generator of benchmarks/workloads.py
    sizes: dict                      # its arguments at full size
    quick: dict                      # ... and for --quick
    converter: str                   # a key of methods.CONVERTERS
    suffixes: tuple = (".txt",)
    methods: tuple = METHODS
    memory_limit: str | None = None  # of each dask worker
    note: str = ""


WORKLOADS = [
    Workload("many-small", "many-small", {"n_files": 80_000}, {"n_files": 400}, "sentences",
             (".txt.gz",), note="gzip files of 0.3-5 KB of text, `sentences`"),
    Workload("cpu-heavy", "cpu-heavy", {"n_files": 2_500}, {"n_files": 40}, "heavy",
             note="10-30 KB text files, the `heavy` converter (sentences, words, trigrams, vocabulary ids)"),
    Workload("skewed", "skewed", {"n_tiny": 9_000, "n_medium": 360, "n_huge": 12},
             {"n_tiny": 200, "n_medium": 8, "n_huge": 2}, "sentences",
             note="files of 0.5-5 KB (9,000), 50-200 KB (360) and 4-8 MB (12); `sentences`"),
    Workload("one-big-file", "one-big-file", {"size_mb": 2_000}, {"size_mb": 8}, "jsonl",
             (".jsonl",), note="one JSON-lines file, 300 B - 3 KB of text per record; `jsonl`"),
    Workload(BTM, "cpu-heavy", {"n_files": 8_000}, {"n_files": 150}, "sentences",
             methods=("dask-prep",), memory_limit="400MB",
             note="10-30 KB text files, `sentences`, workers limited to 400 MB each; "
                  "run on the corpus (1x) and on the corpus twice over (2x)"),
]


@dataclass
class Run:
    workload: str
    method: str
    seconds: float | None = None
    peak_rss: int = 0          # bytes, the sum over the process tree at its highest
    peak_child_rss: int = 0    # bytes, the largest single process below the root
    extra: dict = field(default_factory=dict)
    fp: Fingerprint | None = None
    error: str | None = None


# -- running one method ---------------------------------------------------------


def tree_rss(root: psutil.Process) -> dict[int, int] | None:
    """``{pid: RSS bytes}`` of each live process in ``root``'s tree; ``None`` once it is gone."""
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    rss = {}
    for p in tree:
        try:
            rss[p.pid] = p.memory_info().rss
        except psutil.Error:
            continue
    return rss


def _sample(proc: subprocess.Popen, run: Run, stop: threading.Event) -> None:
    """Track the peak RSS of ``proc``'s tree (sum) and of its largest descendant."""
    root = psutil.Process(proc.pid)
    peaks: dict[int, int] = {}
    while not stop.is_set() and (rss := tree_rss(root)) is not None:
        run.peak_rss = max(run.peak_rss, sum(rss.values()))
        for pid, n in rss.items():
            if pid != root.pid:
                peaks[pid] = max(peaks.get(pid, 0), n)
        stop.wait(0.05)
    run.peak_child_rss = max(peaks.values(), default=0)


def _read_all(root: Path) -> None:
    """Read the corpus once before a run, so every method starts with it in the page
    cache (after the Hugging Face baseline's 14 GB, the next method read from disk)."""
    buf = bytearray(1 << 20)
    for folder, dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def run_method(wl: Workload, method: str, root: Path, scratch: Path, workers: int,
               python: str = sys.executable) -> Run:
    out = scratch / "out"
    shutil.rmtree(scratch, ignore_errors=True)
    out.mkdir(parents=True)
    job = {"root": str(root), "out": str(out), "scratch": str(scratch), "converter": wl.converter,
           "suffixes": list(wl.suffixes), "shard_size": SHARD_SIZE, "workers": workers,
           "memory_limit": wl.memory_limit}
    run, stop = Run(wl.name, method), threading.Event()
    _read_all(root)
    with open(scratch / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([python, "-m", "benchmarks.methods", method, json.dumps(job)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        sampler = threading.Thread(target=_sample, args=(proc, run, stop), daemon=True)
        sampler.start()
        stdout, _ = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode:
            err.seek(0)
            run.error = f"exit {proc.returncode}: " + err.read()[-2_000:]
            return run
    run.extra = json.loads(stdout.strip().splitlines()[-1])
    run.seconds = run.extra.pop("seconds")
    run.fp = fingerprint(out)
    shutil.rmtree(scratch, ignore_errors=True)
    return run


# -- corpora ----------------------------------------------------------------------


def corpora(wl: Workload, data: Path, quick: bool, scale: float) -> list[tuple[str, Path]]:
    """``[(label, root)]``: the workload's corpus, and for bigger-than-memory its double."""
    sizes = {k: max(1, round(v * (1 if quick else scale))) for k, v in (wl.quick if quick else wl.sizes).items()}
    t0 = time.perf_counter()
    root = workloads.cached(wl.corpus, data, **sizes)
    found = [("1x", root)]
    if wl.name == BTM:
        found.append(("2x", workloads.cached("doubled", data, source=root)))
    if time.perf_counter() - t0 > 1:
        print(f"  built {wl.name} corpus in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return found


def corpus_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return len(files), sum(p.stat().st_size for p in files)


# -- reporting --------------------------------------------------------------------


def _median(xs):
    return statistics.median(xs) if xs else None


def _mb(n) -> str:
    return f"{n / 1e6:,.0f}" if n else "-"


def method_stats(runs: list[Run]) -> dict:
    ok = [r for r in runs if r.error is None]
    return {"median": _median([r.seconds for r in ok]), "min": min((r.seconds for r in ok), default=None),
            "rss": _median([r.peak_rss for r in ok]), "child_rss": _median([r.peak_child_rss for r in ok]),
            "fp": ok[-1].fp if ok else None, "failed": len(runs) - len(ok),
            "errors": [r.error for r in runs if r.error]}


def workload_table(wl: Workload, stats: dict) -> str:
    base = stats.get("serial", {}).get("median")
    head = ("| method | median s | min s | ratio to serial | peak RSS MB (tree) | records | "
            "files (partial) |\n|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for method, s in stats.items():
        if s["median"] is None:
            rows.append(f"| {method} | failed | | | | | |")
            continue
        ratio = f"{s['median'] / base:.2f}" if base else "-"
        sizes = s["fp"].shard_sizes
        partial = sum(1 for n in sizes if n != SHARD_SIZE)
        rows.append(f"| {method} | {s['median']:.2f} | {s['min']:.2f} | {ratio} | {_mb(s['rss'])} | "
                    f"{s['fp'].records:,} | {len(sizes)} ({partial}) |")
    return "\n".join([head, *rows])


def btm_table(stats: dict) -> str:
    head = ("| corpus | median s | peak RSS MB (tree) | peak worker RSS MB | records |\n"
            "|---|---:|---:|---:|---:|")
    rows = [f"| {label} | {s['median']:.2f} | {_mb(s['rss'])} | {_mb(s['child_rss'])} | {s['fp'].records:,} |"
            if s["median"] is not None else f"| {label} | failed | | | |" for label, s in stats.items()]
    return "\n".join([head, *rows])


def check_records(wl: Workload, stats: dict) -> list[str]:
    """Problems: failed methods, or methods whose records differ from the first one's."""
    problems = [f"{wl.name}/{m}: {s['failed']} run(s) failed: {s['errors'][0]}"
                for m, s in stats.items() if s["failed"]]
    done = {m: s["fp"] for m, s in stats.items() if s["fp"] is not None}
    if wl.name == BTM and {"1x", "2x"} <= done.keys():
        if not done["1x"].twice().same_records(done["2x"]):
            problems.append(f"{wl.name}: the 2x corpus did not yield every record of the 1x corpus twice")
        return problems
    if done:
        ref_name, ref = next(iter(done.items()))
        for m, fp in done.items():
            if not fp.same_records(ref):
                problems.append(f"{wl.name}/{m}: records differ from {ref_name}'s "
                                f"({fp.records:,} vs {ref.records:,} records)")
    for m in ("serial", "pool-imap", "hf-datasets", "dask-prep"):
        if m in done and sum(1 for n in done[m].shard_sizes[:-1] if n != SHARD_SIZE):
            problems.append(f"{wl.name}/{m}: shards are not exact: {done[m].shard_sizes}")
    return problems


def targets(all_stats: dict, runs: list[Run], workers: int) -> list[tuple[bool, str]]:
    """(met, description) for each target of the issue that this run measured."""
    found = []
    for name, bound in (("cpu-heavy", 0.60), ("many-small", 0.60),
                        ("skewed", 1.15 / workers), ("one-big-file", 1.15 / workers)):
        st = all_stats.get(name, {})
        dp, serial = st.get("dask-prep", {}).get("median"), st.get("serial", {}).get("median")
        if dp and serial:
            found.append((dp <= bound * serial,
                          f"{name}: dask-prep {dp / serial:.2f} x serial (target <= {bound:.3f})"))
            if bound == 0.60:
                others = {m: s["median"] for m, s in st.items()
                          if m not in ("serial", "dask-prep", "dask-prep/partition") and s["median"]}
                if others:
                    best = min(others, key=others.get)
                    found.append((dp < others[best], f"{name}: dask-prep {dp:.2f} s vs the fastest other "
                                                     f"method, {best}, {others[best]:.2f} s"))
        part = st.get("dask-prep/partition", {}).get("median")
        if dp and part:
            found.append((dp <= 1.10 * part, f"{name}: exact shards cost {100 * (dp / part - 1):+.1f}% "
                                             f"over one file per partition (target <= +10%)"))
    btm = all_stats.get(BTM, {})
    if btm.get("1x", {}).get("child_rss") and btm.get("2x", {}).get("child_rss"):
        a, b = btm["1x"]["child_rss"], btm["2x"]["child_rss"]
        found.append((b <= 1.10 * a, f"{BTM}: peak worker RSS {_mb(a)} MB at 1x, {_mb(b)} MB at 2x "
                                     f"({100 * (b / a - 1):+.1f}%, target <= +10%)"))
    starts = [r.extra["cluster_start"] + r.extra["cluster_stop"] for r in runs
              if r.method == "dask-prep" and r.error is None]
    if starts:
        found.append((_median(starts) <= 3, f"cluster start-up + shutdown: median {_median(starts):.2f} s "
                                            f"over {len(starts)} runs (target <= 3 s)"))
    return found


def dask_prep_breakdown(runs: list[Run]) -> str:
    """Where dask-prep's time went, per workload (medians)."""
    rows = ["| workload | total s | cluster start s | cluster stop s | discovery+plan+start/stop s "
            "| convert+write s | merge+commit s | partitions |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r.workload for r in runs):
        rs = [r for r in runs if r.workload == name and r.method in ("dask-prep", "1x") and r.error is None]
        if not rs:
            continue
        med = {k: _median([r.extra[k] for r in rs]) for k in
               ("elapsed", "write_phase", "commit", "cluster_start", "cluster_stop", "partitions")}
        rows.append(f"| {name} | {med['elapsed']:.2f} | {med['cluster_start']:.2f} | {med['cluster_stop']:.2f} "
                    f"| {med['elapsed'] - med['write_phase']:.2f} | {med['write_phase'] - med['commit']:.2f} "
                    f"| {med['commit']:.2f} | {med['partitions']:.0f} |")
    return "\n".join(rows)


def chart(all_stats: dict, path: Path, workers: int) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    names = [n for n in all_stats if n != BTM and all_stats[n].get("serial", {}).get("median")]
    if not names:
        return "no workload with a serial baseline: no chart"
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        st = all_stats[name]
        base = st["serial"]["median"]
        methods = [m for m in st if st[m]["median"]]
        ratios = [st[m]["median"] / base for m in methods]
        colors = ["tab:orange" if m.startswith("dask-prep") else "tab:gray" for m in methods]
        ax.barh(methods[::-1], ratios[::-1], color=colors[::-1])
        ax.axvline(1 / workers, ls="--", c="k", lw=1, label=f"serial / {workers}")
        ax.axvline(1, ls=":", c="k", lw=1)
        ax.set_title(name)
        ax.set_xlabel("wall time / serial loop")
        for y, r in enumerate(ratios[::-1]):
            ax.text(r, y, f" {r:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(ratios) * 1.2)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- main -------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny corpora and one round: a smoke test")
    ap.add_argument("--repeat", type=int, help="rounds of every method (default 3, 1 with --quick)")
    ap.add_argument("-w", "--workload", action="append", choices=[w.name for w in WORKLOADS],
                    help="run only these workloads (repeatable; default all)")
    ap.add_argument("-m", "--method", action="append", choices=METHODS,
                    help="run only these methods (repeatable; default all)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every corpus size (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="processes per parallel method (default 2)")
    ap.add_argument("--data", type=Path, default=HERE / "data", help="corpus cache (default benchmarks/data)")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="where suite.md/.png/.json go")
    args = ap.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    chosen = [w for w in WORKLOADS if not args.workload or w.name in args.workload]
    load0, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs, all_stats, problems, sections = [], {}, [], []
    scratch = Path(tempfile.mkdtemp(prefix="dask-prep-bench-"))
    try:
        for wl in chosen:
            print(f"{wl.name}:", file=sys.stderr)
            sources = corpora(wl, args.data, args.quick, args.scale)
            methods = [m for m in wl.methods if not args.method or m in args.method]
            plan = [(label, root, m) for label, root in sources for m in methods]
            by_key: dict[str, list[Run]] = {}
            for round_ in range(repeat):
                k = round_ % len(plan)
                for label, root, method in plan[k:] + plan[:k]:
                    python = str(datatrove_env.venv(args.data)) if method == "datatrove" else sys.executable
                    run = run_method(wl, method, root, scratch / "run", args.workers, python)
                    key = label if wl.name == BTM else method
                    run.method = key
                    by_key.setdefault(key, []).append(run)
                    runs.append(run)
                    took = "FAILED" if run.error else f"{run.seconds:7.2f} s  {run.fp.records:>10,} records"
                    print(f"  round {round_ + 1}/{repeat}  {key:<20} {took}  peak RSS "
                          f"{_mb(run.peak_rss)} MB", file=sys.stderr)
            order = [label for label, _ in sources] if wl.name == BTM else [m for m in METHODS if m in by_key]
            stats = {k: method_stats(by_key[k]) for k in order}
            all_stats[wl.name] = stats
            problems += check_records(wl, stats)
            nfiles, nbytes = corpus_size(sources[0][1])
            table = btm_table(stats) if wl.name == BTM else workload_table(wl, stats)
            sections.append(f"### {wl.name}\n\n{wl.note}: {nfiles:,} files, {nbytes / 1e6:,.0f} MB"
                            f"{' (1x)' if wl.name == BTM else ''}\n\n{table}\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    met = targets(all_stats, runs, args.workers)
    args.results.mkdir(parents=True, exist_ok=True)
    chart_note = chart(all_stats, args.results / "suite.png", args.workers)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    report = "\n".join([
        "## dask-prep benchmark suite\n",
        f"`{command.strip()}` on {started}: {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}, "
        f"{args.workers} workers per parallel method, {repeat} round(s), shards of {SHARD_SIZE:,} records. "
        f"1-min load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end. Peak RSS is "
        "the sum over the process tree (shared pages count once per process).\n",
        *sections,
        "### where dask-prep's time goes (medians)\n",
        dask_prep_breakdown(runs) + "\n",
        "### targets\n",
        *(f"- {'met' if ok else 'MISSED'}: {text}" for ok, text in met),
        "",
        "### record checks\n",
        *(f"- FAIL {p}" for p in problems),
        *([] if problems else ["- every method produced the same records in every workload"]),
        *([f"\n{chart_note}"] if chart_note else ["\n![ratios to the serial loop](suite.png)"]),
    ])
    (args.results / "suite.md").write_text(report + "\n")
    (args.results / "suite.json").write_text(json.dumps(
        [{**{k: v for k, v in vars(r).items() if k != "fp"}, "fp": r.fp._asdict() if r.fp else None}
         for r in runs], indent=1))
    print(report)
    return 1 if problems else 0
