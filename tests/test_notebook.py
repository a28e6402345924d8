"""notebooks/quickstart.ipynb runs from top to bottom on a real kernel."""
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # executes the quickstart notebook

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("ipywidgets")

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.timeout(300)
def test_quickstart_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs committed"
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("records" in h and "<table>" in h for h in html), "run summary table missing"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, "a plot is missing"
    assert any("sequences" in h and "tokens" in h and "<table" in h for h in html), "no tokens per shard table"
    assert any("tokens" in h and "mean" in h and "<table" in h for h in html), "no tokens per document table"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "(8, 256) int32" in text, "a packed batch is not dense [8, 256]"
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "dp.run showed no Dask progress widget in the notebook"
    assert (tmp_path / "quickstart-out" / ".manifest.json").exists()
    assert (tmp_path / "quickstart-tokens" / ".manifest.json").exists()
    assert (tmp_path / "quickstart-tokenizer.json").exists()
