"""The dataset report: numbers and escaping in the HTML, the CLI, pickle safety, and the
page opened in a real headless Chromium (the plots must have been drawn)."""
from __future__ import annotations

import html
import json
import pathlib
import pickle
import re
import shutil
import subprocess

import numpy as np
import pytest

import dask_prep as dp

from helpers import dask_prep_cli, write

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BAR, ERROR_BAR = (0x3B, 0x6E, 0xA5), (0xC8, 0x55, 0x3D)  # the report's two plot colours


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real run: sentences with token ids, a hostile folder name, failing and
    excluded files, a missing input."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        body = " ".join(f"Document {i} says {'very ' * (i % 4)}many things, number {j}."
                        for j in range(3 + 2 * i))
        write(root / f"sub {i % 2}" / f"doc #{i} [x].txt", body)
    write(root / "a::b.txt", "Café – 東京 is a place. It has words.")
    write(root / HOSTILE / "empty.txt", b"")
    write(root / HOSTILE / "latin1.txt", "caf\xe9 au lait.".encode("latin-1"))
    write(root / "skip me.txt", "Excluded. Never read.")
    inputs = [str(root), str(root / "not here")]
    vocab = dp.build_vocab(dp.to_bag(dp.discover(inputs), converter="sentences"), size=64)
    out = tmp_path_factory.mktemp("sets") / "my set"
    dp.run(inputs, out, converter=dp.with_token_ids("sentences", vocab), shard_size=20,
           exclude=["skip me.txt"], workers=1)
    return out, root


@pytest.fixture(scope="module")
def page(dataset):
    return dp.report(dataset[0])


def truth(out) -> dict:
    """What the shards hold, read in full through the public API."""
    records = list(dp.open(out))
    return {"records": len(records), "words": sum(len(r["words"]) for r in records),
            "tokens": sum(len(r["token_ids"]) for r in records),
            "max_words": max(len(r["words"]) for r in records),
            "max_chars": max(len(r["text"]) for r in records)}


@pytest.mark.slow
def test_report_numbers_match_the_shards(dataset, page):
    out, _ = dataset
    want = truth(out)
    assert page.facts["records"] == want["records"] == len(dp.open(out))
    assert page.facts["words"] == want["words"] and page.facts["tokens"] == want["tokens"]
    assert page.facts["shards"] == len(dp.open(out).shards) > 3
    assert page.facts["sampled_records"] == want["records"]  # a small set is read whole
    for number in (want["records"], want["words"], want["tokens"]):
        assert f">{number:,}<" in page.html
    words_row = re.search(r"words per record \(words\)</td>(.*?)</tr>", page.html, re.S).group(1)
    assert f">{want['max_words']:,}<" in words_row
    chars_row = re.search(r"characters per record \(text\)</td>(.*?)</tr>", page.html, re.S).group(1)
    assert f">{want['max_chars']:,}<" in chars_row


def test_report_lists_errors_sources_and_options_escaped(dataset, page):
    out, root = dataset
    errors = dp.open(out).errors()
    assert {pathlib.Path(e["path"]).name: e["error"] for e in errors} == {
        "empty.txt": "EmptyFileError", "latin1.txt": "UnicodeDecodeError"}
    assert HOSTILE not in page.html and "<img" not in page.html  # escaped, so not markup
    text = html.unescape(page.html)
    for e in errors:
        assert e["path"] in text and e["message"] in text
    assert "Errors (2)" in page.html
    assert f"<li class=\"wrap\">{html.escape(str(root / 'not here'))}</li>" in page.html  # missing
    excluded = re.search(r'<td class="k">excluded</td><td>(\d+)</td>', page.html).group(1)
    assert excluded == "1"
    assert "sentences+token_ids" in page.html and "options.encoding_errors" in page.html
    assert "no per-partition timings" in page.html  # today's manifest has none


def test_sampling_few_shards_estimates_and_says_so(dataset):
    out, _ = dataset
    n = len(dp.open(out).shards)
    page = dp.report(out, sample_records=3, sample_shards=2)
    assert page.facts["sampled_records"] == 6  # 3 records from each of 2 shards
    assert f"estimated from 2 of {n} shards" in page.html
    assert f"the first 3 records of 2 of {n} shards, evenly spaced" in page.html
    with pytest.raises(ValueError, match="sample_shards=0"):
        dp.report(out, sample_shards=0)


def test_partition_timings_are_shown_when_the_manifest_has_them(dataset, tmp_path):
    out, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    [manifest] = copy.glob("*manifest.json")
    m = json.loads(manifest.read_text())
    m["run"]["partitions"] = [{"index": 0, "seconds": 0.25, "records": 7},
                              {"index": 1, "seconds": 4.5, "records": 9, "first_source": HOSTILE}]
    manifest.write_text(json.dumps(m))
    page = dp.report(copy)
    table = page.html[page.html.index("<h2>Partitions</h2>"):page.html.index("<h2>Sources</h2>")]
    assert table.index(">4.500<") < table.index(">0.250<")  # slowest first
    assert HOSTILE in html.unescape(table) and HOSTILE not in table
    assert "no per-partition timings" not in table


def test_pickle_shards_are_not_unpickled_unless_allowed(tmp_path):
    import dask.bag as db
    out = tmp_path / "pkl"
    records = [{"text": "a b c", "words": ["a", "b", "c"]}] * 5
    dp.write_shards(db.from_sequence(records), out, shard_size=2, format="pickle")
    allowed = dp.report(out, allow_pickle=True)
    assert allowed.facts["words"] == 15 and "words per record (words)" in allowed.html

    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return pathlib.Path.touch, (marker,)

    (out / "shard-00000.pkl").write_bytes(pickle.dumps(Payload()))
    page = dp.report(out)
    assert not marker.exists()
    assert page.facts["records"] == 5 and "words" not in page.facts
    assert "were not read (unpickling runs code)" in page.html
    assert "words per record" not in page.html
    with pytest.raises(dp.CorruptShardError, match="shard-00000.pkl: "):
        dp.open(out, allow_pickle=True).read_shard(0)  # the replaced shard is caught before unpickling
    assert not marker.exists()
    assert dp.open(out, allow_pickle=True, check=False).read_shard(0) is None
    assert marker.exists()  # the payload is live: had the report unpickled it, we would know


def test_repr_html_embeds_the_page_in_a_sandboxed_iframe(page):
    frame = page._repr_html_()
    assert frame.startswith("<iframe") and 'sandbox="allow-scripts"' in frame
    srcdoc = re.search(r'srcdoc="([^"]*)"', frame).group(1)
    assert html.unescape(srcdoc) == page.html


def cli(*args, cwd):
    return subprocess.run(dask_prep_cli() + list(map(str, args)), capture_output=True, text=True,
                          cwd=cwd, timeout=240)


@pytest.mark.slow  # a real CLI run or several: seconds
def test_cli_writes_the_page_beside_you_never_into_the_dataset(dataset, tmp_path):
    out, _ = dataset
    before = sorted(p.name for p in out.iterdir())
    res = cli("report", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "my set-report.html\n"
    assert "dask-prep report: my set" in (tmp_path / "my set-report.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == before
    res = cli("report", out, "-o", tmp_path / "r.html", "--sample", "5", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == str(tmp_path / "r.html")
    res = cli("report", tmp_path / "nothing", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "not a dask-prep dataset" in res.stderr


# --- in a real browser -------------------------------------------------------------

def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
         "--virtual-time-budget=5000", *map(str, args)],
        capture_output=True, text=True, timeout=180, check=True)


def painted(png: pathlib.Path, colour) -> int:
    """How many pixels of the screenshot have (nearly) this colour."""
    from PIL import Image  # installed with matplotlib, a test dependency
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return int((np.abs(rgb - np.array(colour)).sum(axis=-1) < 24).sum())


def screenshot(tmp_path, page: pathlib.Path, name: str, *flags) -> pathlib.Path:
    png = tmp_path / name
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,3600", *flags, page.as_uri())
    return png


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: the browser check needs "
                    "it (apt-get install chromium; .ci/run installs it)")
def test_page_renders_its_plots_in_headless_chromium(dataset, tmp_path):
    page = dp.report(dataset[0], tmp_path / "report page.html")
    path = tmp_path / "report page.html"
    dom = chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    roots = re.findall(r'data-root-id="[^"]+"[^>]*>(<div class="bk-Figure")?', dom)
    assert len(roots) >= 7 and all(roots), "every plot's root holds a drawn bokeh figure"
    assert f"<title>{html.escape(page.title)}</title>" in dom  # the hostile name ran no code
    png = screenshot(tmp_path, path, "page.png")
    assert painted(png, BAR) > 5_000 and painted(png, ERROR_BAR) > 1_000

    # the same page without BokehJS draws nothing: the checks above can fail
    head, body = page.html.split("</head>", 1)
    (tmp_path / "no js.html").write_text(re.sub(r"<script.*?</script>", "", head, flags=re.S)
                                         + "</head>" + body, encoding="utf-8")
    assert painted(screenshot(tmp_path, tmp_path / "no js.html", "no-js.png"), BAR) == 0

    # in a notebook the page is an iframe inside the notebook's own page; a sandboxed
    # frame gets a process of its own, which the virtual time budget does not wait for
    # unless the frame stays in the page's process
    (tmp_path / "notebook.html").write_text(
        f"<!DOCTYPE html><html><body><h1>notebook</h1>{page._repr_html_()}</body></html>",
        encoding="utf-8")
    png = screenshot(tmp_path, tmp_path / "notebook.html", "notebook.png",
                     "--disable-site-isolation-trials")
    assert painted(png, BAR) > 5_000  # the frame is 900 px tall: the error plots are below
