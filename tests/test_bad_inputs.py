"""A corpus with the bad inputs real corpora have: each one is reported in
.errors.jsonl with path, error type and message, and every good record arrives."""
import gzip
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers import dask_prep_cli, write

CONVERTER = textwrap.dedent("""
    import os
    from dask_prep.ingest.converters import jsonl, text

    def convert(path):
        name = os.path.basename(path)
        if ".jsonl" in name:
            for rec in jsonl(path):
                yield {"doc": name, "value": rec["v"]}
            return
        body = text(path)[0]["text"]
        if "RAISE" in body:
            raise ValueError("converter refused this document")
        yield {"doc": name, "value": len(body)}
""")

HUGE = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    src = root / "in"
    good = {}
    for i in range(12):
        body = f"good document {i} " * (i + 1)
        write(src / f"good{i:02d}.txt", body)
        good[f"good{i:02d}.txt"] = [len(body)]
    write(src / "folder.txt" / "inner.txt", "a directory named like a document is walked")
    good["inner.txt"] = [len("a directory named like a document is walked")]
    (src / "huge.txt").write_bytes(b"x" * HUGE)  # one 100 MB line
    good["huge.txt"] = [HUGE]
    write(src / "mixed.jsonl", '{"v": 1}\n{"v": 2\n\n{"v": 3}\nnot json\n')
    good["mixed.jsonl"] = [1, 3]
    bad = {
        "empty.txt": "EmptyFileError",
        "zero.txt.gz": "EmptyFileError",
        "truncated.txt.gz": ("zlib.error", "EOFError", "gzip.BadGzipFile"),
        "latin1.txt": "UnicodeDecodeError",
        "binary.txt": "BinaryFileError",
        "unreadable.txt": "PermissionError",
        "broken.txt": "FileNotFoundError",
        "raises.txt": "ValueError",
        "wrongtype.jsonl": "SchemaMismatchError",
    }
    (src / "empty.txt").write_bytes(b"")
    (src / "zero.txt.gz").write_bytes(b"")
    (src / "truncated.txt.gz").write_bytes(
        gzip.compress(" ".join(str(i * 7919) for i in range(20000)).encode())[:700])
    (src / "latin1.txt").write_bytes("déjà vu".encode("latin-1"))
    (src / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(src / "unreadable.txt", "you cannot read me").chmod(0)
    (src / "broken.txt").symlink_to(src / "no-such-target.txt")
    write(src / "raises.txt", "please RAISE here")
    write(src / "wrongtype.jsonl", '{"v": "not a number"}\n')
    conv = write(root / "conv.py", CONVERTER)
    yield src, conv, good, bad
    (src / "unreadable.txt").chmod(0o644)


def run_cli(*args):
    """The CLI, unable to bypass file permissions even when the tests run as root."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
    return subprocess.run(prefix + dask_prep_cli() + list(map(str, args)), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.timeout(300)
@pytest.mark.slow  # a real CLI run or several: seconds
def test_every_bad_item_reported_and_every_good_record_kept(corpus, tmp_path):
    src, conv, good, bad = corpus
    out = tmp_path / "out"
    r = run_cli("run", src, "-o", out, "--converter", f"{conv}:convert", "--workers", "2",
                "--shard-size", "4", "--partition-size", "20000", "-q")
    assert r.returncode == 0, r.stderr
    errors = [json.loads(line) for line in (out / ".errors.jsonl").read_text().splitlines()]
    by_file = {}
    for e in errors:
        assert e["path"] and e["error"] and e["message"]
        by_file.setdefault(Path(e["path"]).name, []).append(e)
    for name, kinds in bad.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        assert name in by_file, f"{name} not in .errors.jsonl"
        assert by_file[name][0]["error"] in kinds, by_file[name]
    assert "'value'" in by_file["wrongtype.jsonl"][0]["message"]
    assert [(e["line"], e["error"]) for e in by_file["mixed.jsonl"]] == [
        (2, "JSONDecodeError"), (5, "JSONDecodeError")]
    assert set(by_file) == set(bad) | {"mixed.jsonl"}
    import pyarrow.parquet as pq
    got = {}
    for f in sorted(out.glob("shard-*.parquet")):
        for rec in pq.read_table(f).to_pylist():
            got.setdefault(rec["doc"], []).append(rec["value"])
    assert {k: sorted(v) for k, v in got.items()} == good  # nothing lost, nothing extra
    m = json.loads((out / ".manifest.json").read_text())
    assert m["total_records"] == sum(map(len, good.values())) and m["errors"] == len(errors)


@pytest.mark.slow  # a real CLI run or several: seconds
def test_on_error_raise_stops_with_one_line_and_no_manifest(corpus, tmp_path):
    src, conv, _, _ = corpus
    r = run_cli("run", src, "-o", tmp_path / "out", "--converter", f"{conv}:convert",
                "--workers", "1", "--on-error", "raise", "-q")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dask-prep: error: ")
    assert any(name in lines[0] for name in ["empty.txt", "binary.txt", "broken.txt", "latin1.txt",
                                             "raises.txt", "truncated.txt.gz", "unreadable.txt",
                                             "zero.txt.gz", "mixed.jsonl", "wrongtype.jsonl"])
    assert not (tmp_path / "out" / ".manifest.json").exists()


def test_fifo_is_reported_not_opened(tmp_path):
    import dask_prep as dp
    write(tmp_path / "in" / "ok.txt", "fine")
    os.mkfifo(tmp_path / "in" / "pipe.txt")
    s = dp.discover(tmp_path / "in")
    assert [Path(x.path).name for x in s] == ["ok.txt"]
    assert s.missing == (f"{tmp_path / 'in' / 'pipe.txt'} (not a regular file)",)
