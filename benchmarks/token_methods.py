"""The ways to tokenize a corpus that ``python -m benchmarks.tokens`` compares, one per function.

Each reads every ``.txt.gz`` file under ``job["root"]`` (sorted paths, one
document a file, strict UTF-8), encodes it with the tokenizer ``job["tokenizer"]``
(no special tokens, then its ``<|endoftext|>`` after each document, as
``dask-prep run --tokenizer`` does by default) and writes the token ids into
``job["out"]``:

- ``loop``: a plain ``encode_batch`` loop in one process over batches of
  ``BATCH`` documents, ids appended to ``ids.bin`` (``uint32``); run with
  ``RAYON_NUM_THREADS=1`` it is the one-thread baseline, without it the
  tokenizer's own Rust threads share each batch over every core;
- ``hf-datasets``: Hugging Face ``Dataset.from_dict({"path": paths}).map(...,
  batched=True, num_proc=workers)`` then ``to_parquet`` (an ``input_ids`` column);
- ``datatrove``: datatrove's ``DocumentTokenizer`` (no shuffling) after a reader
  step on its ``LocalPipelineExecutor`` (``tasks = workers``, task ``r`` reading
  the ``r``-th contiguous block of the sorted paths, so the tasks' ``.ds`` files
  end to end are the stream in source order), in an environment of its own
  (``benchmarks/datatrove_env.py``).

dask-prep itself is run as its CLI by ``benchmarks/tokens.py``. Run as ``python
-m benchmarks.token_methods METHOD JOB_JSON``; the last line printed is
``{"seconds": ...}``, the time after the imports.
"""
from __future__ import annotations

import gzip
import json
import os
import sys
import time

__all__ = ["METHODS", "list_files", "read_doc"]

#: Documents per ``encode_batch`` call of the loop (dask-prep's chunk is 1,000 records too).
BATCH = 1000


def list_files(root: str) -> list[str]:
    """Sorted ``.txt.gz`` paths under ``root``, hidden entries skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(folder, f) for f in files
                     if not f.startswith(".") and f.endswith(".txt.gz"))
    return sorted(found)


def read_doc(path: str) -> str:
    with open(path, "rb") as f:
        return gzip.decompress(f.read()).decode("utf-8")


_TOK: dict = {}


def _tokenizer(path: str):
    """The process's tokenizer and its EOS id, loaded once."""
    if path not in _TOK:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(path)
        _TOK[path] = tok, tok.token_to_id("<|endoftext|>")
    return _TOK[path]


def _encode(texts: list[str], path: str) -> list[list[int]]:
    tok, eos = _tokenizer(path)
    return [e.ids + [eos] for e in tok.encode_batch(texts, add_special_tokens=False)]


def loop(job: dict) -> dict:
    import numpy as np

    paths = list_files(job["root"])
    with open(os.path.join(job["out"], "ids.bin"), "wb") as out:
        for start in range(0, len(paths), BATCH):
            docs = _encode([read_doc(p) for p in paths[start:start + BATCH]], job["tokenizer"])
            for ids in docs:
                out.write(np.array(ids, np.uint32).tobytes())
    return {"documents": len(paths)}


def _hf_batch(batch: dict, tokenizer: str) -> dict:
    return {"input_ids": _encode([read_doc(p) for p in batch["path"]], tokenizer)}


def hf_datasets(job: dict) -> dict:
    import datasets

    ds = datasets.Dataset.from_dict({"path": list_files(job["root"])})
    ds = ds.map(_hf_batch, batched=True, num_proc=job["workers"], remove_columns=["path"],
                fn_kwargs={"tokenizer": job["tokenizer"]})
    ds.to_parquet(os.path.join(job["out"], "tokens.parquet"))
    return {}


def datatrove(job: dict) -> dict:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.tokens import DocumentTokenizer

    paths, tasks = list_files(job["root"]), job["workers"]

    def read(data, rank: int = 0, world_size: int = 1):
        n = len(paths)
        for path in paths[rank * n // world_size:(rank + 1) * n // world_size]:
            yield Document(text=read_doc(path), id=path)

    executor = LocalPipelineExecutor(
        pipeline=[read, DocumentTokenizer(job["out"], tokenizer_name_or_path=job["tokenizer"],
                                          eos_token="<|endoftext|>", shuffle_documents=False)],
        tasks=tasks, workers=job["workers"], logging_dir=os.path.join(job["scratch"], "logs"),
        skip_completed=False)
    executor.run()
    return {"tasks": tasks}


METHODS = {"loop": loop, "hf-datasets": hf_datasets, "datatrove": datatrove}


def main(argv=None) -> None:
    method, job = argv or sys.argv[1:]
    job = json.loads(job)
    if method in ("hf-datasets", "datatrove"):  # offline, caches in the job's scratch folder, quiet
        os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                          HF_HOME=os.path.join(job["scratch"], "hf"), TMPDIR=job["scratch"])
    if method == "hf-datasets":
        import datasets
        datasets.disable_progress_bars()
        datasets.disable_caching()
    if method == "datatrove":
        import datatrove.executor  # noqa: F401  (imports outside the clock)
        import datatrove.pipeline.tokens  # noqa: F401
    import numpy  # noqa: F401
    import tokenizers  # noqa: F401
    t0 = time.perf_counter()
    extra = METHODS[method](job)
    extra["seconds"] = time.perf_counter() - t0
    print(json.dumps(extra))


if __name__ == "__main__":
    main()
