"""The package as pip builds it: one version, typed, its data files, its extras."""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dask_prep

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel pip builds from this tree, installed into a folder of its own."""
    d = tmp_path_factory.mktemp("wheel")
    src = d / "src"  # a copy: building leaves build/ and *.egg-info behind
    shutil.copytree(ROOT / "dask_prep", src / "dask_prep",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(d / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((d / "dist").glob("dask_prep-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(d / "site"), str(wheel)], check=True, capture_output=True, timeout=300)
    return d / "site"


@pytest.mark.slow  # builds a wheel
def test_the_version_has_one_source(installed):
    (dist,) = importlib.metadata.distributions(path=[str(installed)])
    assert dist.version == dask_prep.__version__
    cli = subprocess.run([sys.executable, "-m", "dask_prep.cli", "--version"], capture_output=True,
                         text=True, cwd=installed, env={"PYTHONPATH": str(installed)}, timeout=60)
    assert cli.stdout.strip().endswith(dask_prep.__version__)


@pytest.mark.slow
def test_typed_and_its_config_defaults_are_installed(installed):
    assert (installed / "dask_prep" / "py.typed").is_file()
    assert (installed / "dask_prep" / "dask-prep.yaml").is_file()


@pytest.mark.slow
def test_requirements_and_extras(installed):
    (dist,) = importlib.metadata.distributions(path=[str(installed)])
    requires = dist.requires
    assert "pyarrow>=15" in requires  # never 14.0.0: CVE-2023-47248
    assert any(r.startswith("gcsfs>=2023.6") and 'extra == "gcs"' in r for r in requires)
    assert any(r.startswith("adlfs>=2023.6") and 'extra == "azure"' in r for r in requires)
    assert "notebook" in dist.metadata.get_all("Provides-Extra")


def test_the_readme_names_the_notebook_extra():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    at = readme.index("notebooks/quickstart.ipynb")
    assert 'pip install "dask-prep[notebook]"' in readme[max(0, at - 400):at + 400]
