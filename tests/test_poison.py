"""Poison files cost only themselves: a compression bomb, records nested deeper
than Parquet reads, a converter that calls ``sys.exit`` or raises
``KeyboardInterrupt``. Each is its source's error, named; every good record
arrives and the dataset reads back."""
from __future__ import annotations

import gzip
import json
import textwrap
import threading

import dask.bag as db
import pytest

import dask_prep as dp

from helpers import write

GOOD = [f"good{i}.jsonl" for i in range(4)]


def corpus(root, **bad: bytes | str):
    """Four good JSON-lines files (10 records each) and the ``bad`` ones."""
    for i, name in enumerate(GOOD):
        write(root / name, "".join(json.dumps({"text": f"good {i} {j}", "n": j}) + "\n" for j in range(10)))
    for name, body in bad.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return root


def good_texts():
    return sorted(f"good {i} {j}" for i in range(len(GOOD)) for j in range(10))


def bomb(decompressed: int) -> bytes:
    """A gzip file of JSON lines that decompresses ``decompressed`` bytes (~1000x smaller)."""
    line = (json.dumps({"text": "a" * 1000}) + "\n").encode()
    return gzip.compress(line * (decompressed // len(line)), compresslevel=9, mtime=0)


@pytest.mark.slow
def test_a_compression_bomb_is_its_files_error_and_the_rest_arrives(tmp_path):
    data = bomb(100 << 20)  # 100 MiB from ~100 KiB: past 100x and past the 64 MiB floor
    src = corpus(tmp_path / "in", **{"bomb.jsonl.gz": data})
    res = dp.run([src], tmp_path / "out", converter="jsonl", shard_size=7)
    ds = dp.open(tmp_path / "out")
    assert sorted(r["text"] for r in ds) == good_texts()
    [err] = ds.errors()
    assert err["path"].endswith("bomb.jsonl.gz") and err["error"] == "DecompressionLimitError"
    assert "100x its" in err["message"] and "--max-decompressed" in err["message"]
    assert res.manifest["options"]["max_decompressed"] == ["x", 100.0]


@pytest.mark.slow
def test_the_limit_is_an_option_a_size_or_none(tmp_path):
    legit = gzip.compress("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(100_000)).encode())
    src = corpus(tmp_path / "in", **{"big.jsonl.gz": legit})  # ~2 MiB decompressed
    dp.run([src], tmp_path / "small", converter="jsonl", max_decompressed="1MiB")
    [err] = dp.open(tmp_path / "small").errors()
    assert err["error"] == "DecompressionLimitError" and "the limit of 1.00 MiB" in err["message"]
    dp.run([src], tmp_path / "none", converter="jsonl", max_decompressed=None)
    ds = dp.open(tmp_path / "none")
    assert ds.errors() == [] and len(ds) == 100_000 + 40
    with pytest.raises(ValueError, match="max_decompressed must be a ratio such as '100x'"):
        dp.run([src], tmp_path / "bad", converter="jsonl", max_decompressed="lots")


def nested_lists(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_objects(depth: int):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("deep,readable", [
    (nested_lists(49), True), (nested_lists(50), False),
    (nested_objects(63), True), (nested_objects(64), False),
], ids=["49-lists", "50-lists", "63-objects", "64-objects"])
@pytest.mark.slow
def test_records_nested_deeper_than_parquet_reads_are_their_files_error(tmp_path, deep, readable):
    src = corpus(tmp_path / "in", **{"deep.jsonl": json.dumps({"text": "deep", "n": 0, "v": deep}) + "\n"})
    dp.run([src], tmp_path / "out", converter="jsonl", shard_size=3)  # small shards: several carry v
    ds = dp.open(tmp_path / "out")
    texts = sorted(r["text"] for r in ds)  # every shard reads back
    assert dp.verify(tmp_path / "out").ok
    if readable:
        assert texts == sorted(good_texts() + ["deep"]) and ds.errors() == []
    else:
        assert texts == good_texts()
        [err] = ds.errors()
        assert err["path"].endswith("deep.jsonl") and err["error"] == "SchemaMismatchError"
        assert "field 'v' is nested" in err["message"] and "Parquet" in err["message"]


def test_a_deeply_nested_record_fails_in_write_shards_too(tmp_path):
    records = [{"v": nested_lists(60)}] * 6
    with pytest.raises(dp.SchemaMismatchError, match="nested"):
        dp.write_shards(db.from_sequence(records, npartitions=1), tmp_path / "out", shard_size=2,
                        on_error="raise")


EXITING = textwrap.dedent("""
    import os, sys
    from dask_prep.ingest.converters import jsonl

    def convert(path):
        name = os.path.basename(path)
        if name.startswith("exit"):
            sys.exit(3)
        if name.startswith("interrupt"):
            raise KeyboardInterrupt
        return jsonl(path)
""")


def test_a_converter_calling_sys_exit_is_its_files_error(tmp_path):
    src = corpus(tmp_path / "in", **{"exit.jsonl": "{}\n"})
    write(tmp_path / "conv.py", EXITING)
    dp.run([src], tmp_path / "out", converter=f"{tmp_path / 'conv.py'}:convert")
    ds = dp.open(tmp_path / "out")
    assert sorted(r["text"] for r in ds) == good_texts()
    assert ds.errors() == [{"path": str(src / "exit.jsonl"), "error": "SystemExit",
                            "message": "the converter called sys.exit(3)"}]


@pytest.mark.slow  # a real cluster: a KeyboardInterrupt on a worker thread is never a Ctrl-C
def test_a_converters_keyboard_interrupt_on_a_worker_is_its_files_error(tmp_path, client):
    src = corpus(tmp_path / "in", **{"interrupt.jsonl": "{}\n", "exit.jsonl": "{}\n"})
    write(tmp_path / "conv.py", EXITING)
    dp.run([src], tmp_path / "out", converter=f"{tmp_path / 'conv.py'}:convert")
    ds = dp.open(tmp_path / "out")
    assert sorted(r["text"] for r in ds) == good_texts()
    assert sorted(e["error"] for e in ds.errors()) == ["KeyboardInterrupt", "SystemExit"]


def test_a_keyboard_interrupt_in_the_main_thread_still_stops_the_run(tmp_path):
    """In-process (the sync scheduler), it may be the user's Ctrl-C: it is raised."""
    assert threading.current_thread() is threading.main_thread()
    src = corpus(tmp_path / "in", **{"interrupt.jsonl": "{}\n"})
    write(tmp_path / "conv.py", EXITING)
    bag = dp.to_bag([src], converter=f"{tmp_path / 'conv.py'}:convert")
    with pytest.raises(KeyboardInterrupt):
        dp.write_shards(bag, tmp_path / "out")
    assert not (tmp_path / "out" / ".manifest.json").exists()


KILLING = textwrap.dedent("""
    import ctypes, os
    from dask_prep.ingest.converters import jsonl

    def convert(path):
        name = os.path.basename(path)
        if "osexit" in name:
            os._exit(7)
        if "segv" in name:
            ctypes.string_at(0)  # a segmentation fault, as a broken C extension gives
        return jsonl(path)
""")


def cli(*args, cwd):
    import subprocess
    from helpers import dask_prep_cli, env_without_client
    # Dask's SpecCluster gives up a worker not back within this time (15 s by default):
    # a loaded machine restarting workers that a file kills in turn once waited forever
    # for workers after it did. Short, it happens at nearly every kill.
    env = dict(env_without_client(), DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT="100ms")
    return subprocess.run(dask_prep_cli() + [str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=240)


@pytest.mark.slow  # real worker processes killed and restarted, through the CLI
def test_a_file_that_kills_its_worker_is_its_error_and_the_rest_completes(tmp_path):
    import time
    src = corpus(tmp_path / "in", **{"c_osexit.jsonl": "{}\n", "good2_segv.jsonl": "{}\n"})
    write(tmp_path / "conv.py", KILLING)
    (tmp_path / "exclude.txt").write_text("c_osexit.jsonl\ngood2_segv.jsonl\n")
    run = ["run", src, "--converter", f"{tmp_path / 'conv.py'}:convert", "--workers", "2",
           "--partition-size", "8192", "--shard-size", "7"]
    t0 = time.perf_counter()
    res = cli(*run, "-o", tmp_path / "out", cwd=tmp_path)
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    ds = dp.open(tmp_path / "out")
    assert sorted(r["text"] for r in ds) == good_texts()
    assert sorted((os_path(e["path"]), e["error"]) for e in ds.errors()) == [
        ("c_osexit.jsonl", "WorkerKilled"), ("good2_segv.jsonl", "WorkerKilled")]
    assert all("killed the worker process" in e["message"] for e in ds.errors())
    # the same records as a run told to leave the two files out
    clean = cli(*run, "-o", tmp_path / "clean", "--exclude", tmp_path / "exclude.txt", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert sorted(r["text"] for r in dp.open(tmp_path / "clean")) == sorted(r["text"] for r in ds)
    # the same command again: complete, nothing converted
    again = cli(*run, "-o", tmp_path / "out", cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stdout + again.stderr
    # asked to stop at the first failure, it stops naming the file
    strict = cli(*run, "-o", tmp_path / "strict", "--on-error", "raise", "-q", cwd=tmp_path)
    assert strict.returncode == 1 and strict.stderr.count("\n") == 1, strict.stderr
    assert "c_osexit.jsonl: WorkerKilled" in strict.stderr
    print(f"POISON: 2 worker-killing files among {len(GOOD)} good: exit 0 in {seconds:.2f} s, "
          "records identical to a run excluding them")


def os_path(path: str) -> str:
    return path.rsplit("/", 1)[-1]


KILLING_TEXT = textwrap.dedent("""
    import json, os

    def convert(path):
        if "osexit" in os.path.basename(path):
            os._exit(7)
        for line in open(path):
            yield {"text": json.loads(line)["text"]}
""")


@pytest.mark.slow  # real worker processes killed and restarted, through the CLI
def test_a_file_that_kills_its_worker_in_a_packed_token_run_is_its_error(tmp_path):
    """The shards planned before the kill are cut again on the next attempt: the
    packed tokens are those of a run that leaves the file out."""
    from test_tokens import make_tokenizer
    src = corpus(tmp_path / "in", **{"c_osexit.jsonl": "{}\n"})
    write(tmp_path / "conv.py", KILLING_TEXT)
    tok = make_tokenizer(tmp_path / "tok.json", [f"good {i} {j}" for i in range(4) for j in range(10)])
    (tmp_path / "exclude.txt").write_text("c_osexit.jsonl\n")
    run = ["run", src, "--converter", f"{tmp_path / 'conv.py'}:convert", "--workers", "2",
           "--partition-size", "8192", "--shard-size", "3", "--tokenizer", tok, "--seq-len", "4", "-q"]
    res = cli(*run, "-o", tmp_path / "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    clean = cli(*run, "-o", tmp_path / "clean", "--exclude", tmp_path / "exclude.txt", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    ds, ref = dp.open(tmp_path / "out"), dp.open(tmp_path / "clean")
    assert [(os_path(e["path"]), e["error"]) for e in ds.errors()] == [("c_osexit.jsonl", "WorkerKilled")]
    assert [r["input_ids"] for r in ds] == [r["input_ids"] for r in ref] and len(ref) > 3
