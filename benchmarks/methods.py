"""The ways to do one job that ``python -m benchmarks`` compares, one per function.

Every method lists (or discovers) the files under ``job["root"]``, converts each
with the same converter and writes Parquet shards of ``job["shard_size"]``
records with pyarrow's defaults into ``job["out"]``:

- ``serial``: a plain loop in one process;
- ``static-mp``: one ``multiprocessing.Process`` per worker over contiguous,
  equal-count blocks of the sorted paths, each writing its own shards (so each
  leaves one partial shard);
- ``pool-imap``: ``multiprocessing.Pool.imap`` converts, the parent writes;
- ``naive-dask``: ``db.from_sequence(paths).map(convert).flatten()`` and one
  write task per partition (one partial shard each), on a ``LocalCluster``;
- ``hf-datasets``: Hugging Face ``Dataset.from_dict({"path": paths}).map(...,
  batched=True, num_proc=workers)``, then ``select`` + ``to_parquet`` per shard;
- ``datatrove``: datatrove's ``LocalPipelineExecutor``, a reader step and its
  ``ParquetWriter`` (one file per task), in an environment of its own
  (``benchmarks/datatrove_env.py``);
- ``dask-prep``: ``dask_prep.run(...)``, cluster start-up and shutdown included;
- ``dask-prep/partition``: dask-prep's discovery, plan, conversion (records
  taken and converted to Arrow as its writer does) and cluster, but one Parquet
  file per partition instead of exact shards (the cost of exact sharding is the
  difference to ``dask-prep``).

Run as ``python -m benchmarks.methods METHOD JOB_JSON``: the job runs in a fresh
interpreter (imports done before the clock starts) and the last line printed
is ``{"seconds": ..., ...}``. ``python -m benchmarks`` does this for you.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from functools import partial
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq

from dask_prep.ingest.converters import sentences

from .workloads import heavy


def jsonl(path: str):
    """One record per non-blank JSON line (what ``dask-prep``'s ``jsonl`` yields)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


#: converter name -> (the function the baselines call, what dask_prep.run is given)
CONVERTERS = {"sentences": (sentences, "sentences"), "jsonl": (jsonl, "jsonl"),
              "heavy": (heavy, heavy)}
#: the columns of each converter's records (for Hugging Face's column batches)
COLUMNS = {"sentences": ["text", "words"], "jsonl": ["id", "title", "text", "score"],
           "heavy": ["ids", "n_words"]}


def list_files(root: str, suffixes) -> list[str]:
    """Sorted paths under ``root`` ending in one of ``suffixes``, hidden entries skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(folder, f) for f in files
                     if not f.startswith(".") and f.endswith(tuple(suffixes)))
    return sorted(found)


def convert_list(name: str, path: str) -> list[dict]:
    return list(CONVERTERS[name][0](path))


def write_table(table: pa.Table, out: str, name: str) -> None:
    pq.write_table(table, os.path.join(out, f"shard-{name}.parquet"))


class ShardWriter:
    """Buffer records; write every ``size`` of them as a shard, the rest on ``close``."""

    def __init__(self, out: str, size: int, prefix: str = ""):
        self.out, self.size, self.prefix, self.buf, self.n = out, size, prefix, [], 0

    def extend(self, records) -> None:
        records = iter(records)  # a generator is consumed a shard at a time
        while True:
            need = self.size - len(self.buf)
            self.buf.extend(islice(records, need))
            if len(self.buf) < self.size:
                return
            self._write(self.buf)
            self.buf = []

    def close(self) -> None:
        if self.buf:
            self._write(self.buf)
            self.buf = []

    def _write(self, records: list) -> None:
        write_table(pa.Table.from_pylist(records), self.out, f"{self.prefix}{self.n:05d}")
        self.n += 1


def serial(job: dict) -> dict:
    writer = ShardWriter(job["out"], job["shard_size"])
    convert = CONVERTERS[job["converter"]][0]
    for path in list_files(job["root"], job["suffixes"]):
        writer.extend(convert(path))
    writer.close()
    return {}


def _static_block(job: dict, paths: list[str], k: int) -> None:
    writer = ShardWriter(job["out"], job["shard_size"], prefix=f"{k}-")
    convert = CONVERTERS[job["converter"]][0]
    for path in paths:
        writer.extend(convert(path))
    writer.close()


def static_mp(job: dict) -> dict:
    paths, n = list_files(job["root"], job["suffixes"]), job["workers"]
    bounds = [len(paths) * k // n for k in range(n + 1)]
    procs = [multiprocessing.Process(target=_static_block, args=(job, paths[a:b], k))
             for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a worker process failed: exit codes {[p.exitcode for p in procs]}")
    return {}


def pool_imap(job: dict) -> dict:
    paths, n = list_files(job["root"], job["suffixes"]), job["workers"]
    chunksize = max(1, min(64, len(paths) // (8 * n)))
    writer = ShardWriter(job["out"], job["shard_size"])
    with multiprocessing.Pool(n) as pool:
        for records in pool.imap(partial(convert_list, job["converter"]), paths, chunksize=chunksize):
            writer.extend(records)
    writer.close()
    return {"chunksize": chunksize}


def _write_partition(records, job: dict, index: int) -> int:
    writer = ShardWriter(job["out"], job["shard_size"], prefix=f"{index:05d}-")
    writer.extend(records)
    writer.close()
    return len(records)


def naive_dask(job: dict) -> dict:
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster

    paths = list_files(job["root"], job["suffixes"])
    with LocalCluster(n_workers=job["workers"], threads_per_worker=1, processes=True,
                      dashboard_address=None, **_memory(job)) as cluster, Client(cluster):
        bag = db.from_sequence(paths).map(partial(convert_list, job["converter"])).flatten()
        writes = [dask.delayed(_write_partition)(part, job, i)
                  for i, part in enumerate(bag.to_delayed())]
        dask.compute(*writes)
    return {"partitions": len(writes)}


def _hf_batch(batch: dict, name: str) -> dict:
    records = [r for path in batch["path"] for r in CONVERTERS[name][0](path)]
    return {c: [r[c] for r in records] for c in COLUMNS[name]}


def hf_datasets(job: dict) -> dict:
    import datasets

    paths = list_files(job["root"], job["suffixes"])
    ds = datasets.Dataset.from_dict({"path": paths})
    ds = ds.map(_hf_batch, batched=True, num_proc=job["workers"], remove_columns=["path"],
                fn_kwargs={"name": job["converter"]})
    size = job["shard_size"]
    for n, start in enumerate(range(0, len(ds), size)):
        part = ds.select(range(start, min(start + size, len(ds))))
        part.to_parquet(os.path.join(job["out"], f"shard-{n:05d}.parquet"))
    return {}


def _memory(job: dict) -> dict:
    return {"memory_limit": job["memory_limit"]} if job.get("memory_limit") else {}


def dask_prep_run(job: dict) -> dict:
    import dask_prep as dp

    res = dp.run([job["root"]], job["out"], converter=CONVERTERS[job["converter"]][1],
                 format="parquet", shard_size=job["shard_size"], workers=job["workers"],
                 suffixes=job["suffixes"], **_memory(job))
    run = res.manifest["run"]
    return {"write_phase": run["elapsed_seconds"], "commit": run["commit_seconds"],
            "elapsed": res.elapsed, "partitions": res.manifest["partitions"]}


def cluster_start_stop(job: dict) -> dict:
    """Seconds to start and to close the LocalCluster ``dask_prep.run`` starts, in a
    fresh interpreter (the run's own fork server would make a second start cheap)."""
    import subprocess
    out = subprocess.run([sys.executable, "-m", "benchmarks.methods", "--cluster-start-stop",
                          json.dumps(job)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cluster_start_stop(job: dict) -> dict:
    from dask_prep.runtime.cluster import dask_session

    t0 = time.perf_counter()
    with dask_session(workers=job["workers"], **_memory(job)):
        t1 = time.perf_counter()
    return {"cluster_start": t1 - t0, "cluster_stop": time.perf_counter() - t1}


def _write_one(records, out: str, index: int) -> int:
    """One partition to one file, converted to Arrow as dask-prep's writer does
    (``CHUNK`` records at a time as the converter yields them), so that the
    difference to ``dask-prep`` is the cost of cutting exact shards."""
    from dask_prep.write.partition import CHUNK
    rows, tables = [], []
    for _piece, chunks in records.pieces(CHUNK):
        for chunk in chunks:
            rows.extend(chunk or ())  # (None marks a failed piece: none here)
            if len(rows) >= CHUNK:
                tables.append(pa.Table.from_pylist(rows))
                rows = []
    if rows:
        tables.append(pa.Table.from_pylist(rows))
    if tables:
        write_table(pa.concat_tables(tables), out, f"{index:05d}")
    return sum(map(len, tables))


def dask_prep_partition(job: dict) -> dict:
    import dask
    import dask_prep as dp
    from dask_prep.runtime.cluster import dask_session

    with dask_session(workers=job["workers"], **_memory(job)) as session:
        sources = dp.discover([job["root"]], suffixes=job["suffixes"])
        bag = dp.to_bag(sources, CONVERTERS[job["converter"]][1])
        writes = [dask.delayed(_write_one)(part, job["out"], i) for i, part in enumerate(bag.to_delayed())]
        session.client.gather(session.client.compute(writes))
    return {"partitions": len(writes)}


def datatrove(job: dict) -> dict:
    """datatrove's ``LocalPipelineExecutor``: a reader step, its ``ParquetWriter``.

    Runs in datatrove's own environment (``datatrove_env.py``). datatrove cuts
    output files by bytes (``max_file_size``), not by records, so its output is one
    Parquet file per task: the shard layout differs, the records are the same (the
    suite checks them). Each task reads every ``tasks``-th file of the sorted list,
    as datatrove's own readers split their inputs by rank; four tasks per worker,
    so that a slow file does not hold one worker's whole share.
    """
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import ParquetWriter

    paths = list_files(job["root"], job["suffixes"])
    convert = CONVERTERS[job["converter"]][0]
    tasks = 4 * job["workers"]

    def read(data, rank: int = 0, world_size: int = 1):
        for path in paths[rank::world_size]:
            for i, record in enumerate(convert(path)):
                yield Document(text=record.get("text", ""), id=f"{path}#{i}", metadata=record)

    def adapter(self, document) -> dict:
        return document.metadata  # the converter's record, as every other method writes it

    executor = LocalPipelineExecutor(
        pipeline=[read, ParquetWriter(job["out"], output_filename="shard-${rank}.parquet",
                                      adapter=adapter, use_content_defined_chunking=False,
                                      write_page_index=False)],
        tasks=tasks, workers=job["workers"], logging_dir=os.path.join(job["scratch"], "logs"),
        skip_completed=False)
    executor.run()
    return {"tasks": tasks}


METHODS = {"serial": serial, "static-mp": static_mp, "pool-imap": pool_imap,
           "naive-dask": naive_dask, "hf-datasets": hf_datasets, "datatrove": datatrove,
           "dask-prep": dask_prep_run, "dask-prep/partition": dask_prep_partition}


def main(argv=None) -> None:
    method, job = (argv or sys.argv[1:])
    job = json.loads(job)
    if method == "--cluster-start-stop":
        import distributed  # noqa: F401  (imported outside the clock, as for the runs)
        print(json.dumps(_cluster_start_stop(job)))
        return
    fn = METHODS[method]
    if method in ("hf-datasets", "datatrove"):  # offline, caches in the job's scratch folder, quiet
        os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                          HF_HOME=os.path.join(job["scratch"], "hf"),
                          TMPDIR=job["scratch"])
    if method == "hf-datasets":
        import datasets
        datasets.disable_progress_bars()
        datasets.disable_caching()
    if method == "datatrove":
        import datatrove.executor  # noqa: F401  (outside the clock)
        import datatrove.pipeline.writers  # noqa: F401
    import dask.bag  # noqa: F401  (imports outside the clock for every method)
    import distributed  # noqa: F401
    t0 = time.perf_counter()
    extra = fn(job)
    extra["seconds"] = time.perf_counter() - t0
    if method == "dask-prep":  # after the clock, on their own
        extra.update(cluster_start_stop(job))
    print(json.dumps(extra))


if __name__ == "__main__":
    main()
