"""The environment of the ``datatrove`` baseline (``methods.datatrove``).

datatrove 0.10 needs ``huggingface-hub>=1.6`` while ``mosaicml-streaming`` (in
dask-prep's test extra) pins ``huggingface-hub<1``, so the two cannot share one
environment: ``venv(data)`` makes a virtual environment of its own under the
benchmark's data folder (``pip install datatrove orjson`` and this project), once,
and ``python -m benchmarks`` runs that method with that environment's Python.
"""
from __future__ import annotations

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
