"""The ``datatrove`` baseline: Hugging Face datatrove's ``LocalPipelineExecutor``
with a reader step and its own ``ParquetWriter``, the same converter as every
other method.

datatrove 0.10 needs ``huggingface-hub>=1.6`` while ``mosaicml-streaming`` (in
dask-prep's test extra) pins ``huggingface-hub<1``, so the two cannot share one
environment: ``venv(data)`` makes a virtual environment of its own under the
benchmark's data folder (``pip install datatrove orjson`` and this project), once,
and ``python -m benchmarks`` runs this method with that environment's Python.

datatrove cuts output files by bytes (``max_file_size``), not by records, so its
output is one Parquet file per task: the shard layout differs, the records are
the same (the suite checks them). Each task reads every ``tasks``-th file of the
sorted list, as datatrove's own readers split their inputs by rank; there are
four tasks per worker so that a slow file does not hold one worker's whole share.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def venv(data: Path) -> Path:
    """The Python of the datatrove environment under ``data``, made on first use."""
    home = data / ".venv-datatrove"
    python = home / "bin" / "python"
    ready = home / ".complete"
    if not ready.exists():
        print(f"making {home} for the datatrove baseline (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "datatrove", "orjson",
                        "-e", str(ROOT)], check=True)
        ready.touch()
    return python


def run(job: dict) -> dict:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import ParquetWriter

    from .methods import CONVERTERS, list_files

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
