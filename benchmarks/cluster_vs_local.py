"""The same job on a LocalCluster and on a cluster of `dask scheduler` + `dask worker`
processes, both 2 single-threaded workers, in one run: wall time and identical output.

    python -m benchmarks.cluster_vs_local --repeat 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dask_prep.cli import demo_inputs


def start_cluster(d: Path) -> tuple[str, list]:
    sfile = d / "s.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                               "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                               "--scheduler-file", str(sfile)], stderr=subprocess.DEVNULL)]
    while not sfile.exists():
        time.sleep(0.05)
    procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                   "--scheduler-file", str(sfile), "--nworkers", "2", "--nthreads",
                                   "1", "--host", "127.0.0.1", "--no-dashboard"],
                                  stderr=subprocess.DEVNULL, cwd=d))
    from distributed import Client
    address = json.loads(sfile.read_text())["address"]
    with Client(address) as c:
        c.wait_for_workers(2)
    return address, procs


def run_cli(out: Path, where: list[str], exclude: Path) -> float:
    root, _ = demo_inputs()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dask_prep.cli", "run", root, "-o", str(out), "--converter",
                    "sentences", "--suffix", ".py", "--exclude", str(exclude), "-q", "--overwrite",
                    *where], check=True, capture_output=True)
    return time.perf_counter() - t0


def digest(out: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.glob("shard-*")))).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        exclude = d / "exclude.txt"
        exclude.write_text("\n".join(demo_inputs()[1]) + "\n")
        address, procs = start_cluster(d)
        times = {"local (--workers 2, start-up included)": [], "cluster (--scheduler)": []}
        try:
            for _ in range(args.repeat):
                times["local (--workers 2, start-up included)"].append(
                    run_cli(d / "local", ["--workers", "2"], exclude))
                times["cluster (--scheduler)"].append(
                    run_cli(d / "remote", ["--scheduler", address], exclude))
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
        same = digest(d / "local") == digest(d / "remote")
        base = statistics.median(times["local (--workers 2, start-up included)"])
        print("| where | median s | min s | ratio to local |\n|---|---:|---:|---:|")
        for name, ts in times.items():
            print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | "
                  f"{statistics.median(ts) / base:.2f} |")
        print(f"\nshards byte-identical: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
