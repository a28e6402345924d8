"""Tokens: a real tokenizer on the workers, packed sequences, exact and resumable.

Every test compares with the serial loop a user would write: ``encode_batch``
over the same documents in source order, each followed by EOS.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import dask_prep as dp
from dask_prep.errors import OutputExistsError, TokenizerError
from dask_prep.write.output import ERRORS, MANIFEST
from dask_prep.tokens.tokenizer import loads, resolve_tokenizer
from helpers import dask_prep_cli, dask_processes, env_without_client, write

# names a user's corpus has: spaces, unicode, '::', '#', '[', a leading dash
NAMES = ["a doc.txt", "Ünïcode 文.txt", "Algorithm::Diff.txt", "#hash.txt", "b[1].txt", "-dash.txt"]


def words(i: int, n: int) -> str:
    return " ".join(f"word{(i * 7 + j) % 23} über{j % 5} 文{j % 3}." for j in range(n))


def make_tokenizer(path: Path, texts=None) -> Path:
    """A small byte-level BPE (nothing maps to unknown) with an end-of-text token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts or [words(i, 40) for i in range(30)], trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def corpus(root: Path, n: int = 24, size=lambda i: 20 + 15 * (i % 6)) -> list[Path]:
    paths = []
    for i in range(n):
        name = f"{i:03d} {NAMES[i % len(NAMES)]}"
        paths.append(write(root / f"sub{i % 2}" / name, words(i, size(i))))
    return sorted(paths, key=str)


def serial_stream(tok_path: Path, texts: list[str]) -> list[int]:
    tok = Tokenizer.from_file(str(tok_path))
    eos = tok.token_to_id("<|endoftext|>")
    out = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        if enc.ids:
            out += enc.ids + [eos]
    return out


def texts_of(paths) -> list[str]:
    return [Path(p).read_text() for p in sorted(map(str, paths))]


def shard_bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}


def stream_of(out: Path) -> list[int]:
    return [t for r in dp.open(out) for t in r["input_ids"]]


# -- tokenize ------------------------------------------------------------------------


def test_documents_are_tokenized_on_the_workers_in_source_order(client, tmp_path, tok_path):
    paths = corpus(tmp_path / "in")
    res = dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=tok_path, shard_size=5,
                 partition_size=5000)
    docs = list(dp.open(tmp_path / "out"))
    assert [sorted(d) for d in docs] == [["input_ids"]] * len(paths)
    assert [t for d in docs for t in d["input_ids"]] == serial_stream(tok_path, texts_of(paths))
    t = res.manifest["tokens"]
    assert t["documents"] == len(paths) == res.records and res.manifest["partitions"] > 2
    assert t["total_tokens"] == sum(t["tokens_per_shard"]) == len(stream_of(tmp_path / "out"))
    assert t["tokenizer_sha256"] == resolve_tokenizer(tok_path).sha256 and t["seq_len"] is None
    assert [s["records"] for s in res.manifest["shards"]] == [5, 5, 5, 5, 4]
    assert dp.open(tmp_path / "out").schema.field("input_ids").type.value_type == "int32"
    # loaded once per worker process, not per task or document
    counts = client.run(loads, t["tokenizer_sha256"])
    assert sorted(counts.values()) == [1, 1] or sum(counts.values()) == 1


def test_text_field_of_jsonl_records_and_records_without_one(tmp_path, tok_path):
    lines = [{"body": "first doc"}, {"body": ""}, {"title": "no body"}, {"body": 3}, {"body": "last one"}]
    write(tmp_path / "in" / "a b.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    res = dp.run([tmp_path / "in"], tmp_path / "out", converter="jsonl", tokenizer=tok_path,
                 text_field="body", eos=None, bos="<|endoftext|>", workers=1)
    got = [d["input_ids"] for d in dp.open(tmp_path / "out")]
    tok = Tokenizer.from_file(str(tok_path))
    bos = tok.token_to_id("<|endoftext|>")
    assert got == [[bos] + tok.encode(t, add_special_tokens=False).ids for t in ("first doc", "last one")]
    t = res.manifest["tokens"]
    assert (t["documents"], t["empty_documents"], t["bos_id"], t["eos_id"]) == (2, 1, bos, None)
    errors = [json.loads(x) for x in (tmp_path / "out" / ERRORS).read_text().splitlines()]
    assert [(e["error"], e["line"]) for e in errors] == [("TextFieldError", 3), ("TextFieldError", 4)]
    assert "no text field 'body'" in errors[0]["message"] and "holds int" in errors[1]["message"]


@pytest.mark.slow
def test_bad_tokenizers_are_one_line_and_exit_2(tmp_path, tok_path):
    write(tmp_path / "in" / "a.txt", "some text")
    write(tmp_path / "not a tokenizer.json", "{\"hello\": 1}")
    cases = [("gpt2", "is not a local file or folder; dask-prep never downloads anything"),
             (str(tmp_path / "missing.json"), "is not a local file or folder"),
             (str(tmp_path / "not a tokenizer.json"), "is not a tokenizers tokenizer"),
             (str(tmp_path / "in" / "a.txt"), "is not a tokenizers tokenizer")]
    for spec, message in cases:
        r = subprocess.run(dask_prep_cli() + ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                                              "--tokenizer", spec], capture_output=True, text=True,
                           env=env_without_client(), timeout=120)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with pytest.raises(TokenizerError, match="eos token 'NOPE' is not in the vocabulary"):
        resolve_tokenizer(tok_path, eos="NOPE")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_changed_tokenizer_is_another_dataset(tmp_path, tok_path):
    corpus(tmp_path / "in", n=4)
    dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=tok_path, seq_len=16, workers=1)
    other = make_tokenizer(tmp_path / "other.json", [words(i, 10) + " extra" for i in range(5)])
    with pytest.raises(OutputExistsError, match="other inputs or options"):
        dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=other, seq_len=16, workers=1)
    res = dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=other, seq_len=16, workers=1,
                 overwrite=True)
    assert res.manifest["tokens"]["tokenizer_sha256"] == resolve_tokenizer(other).sha256


# -- pack ----------------------------------------------------------------------------


@pytest.mark.slow
def test_packed_stream_equals_the_serial_loop_and_shards_match_for_1_and_2_workers(tmp_path, tok_path):
    paths = corpus(tmp_path / "in", n=30)
    serial = serial_stream(tok_path, texts_of(paths))
    L = 32
    outs = {}
    for workers, psize in ((1, None), (2, 4500), (2, 9000)):
        out = tmp_path / f"out{workers}-{psize}"
        res = dp.run([tmp_path / "in"], out, tokenizer=tok_path, seq_len=L, shard_size=7,
                     workers=workers, partition_size=psize, doc_starts=True)
        outs[(workers, psize)] = shard_bytes(out)
        t = res.manifest["tokens"]
        assert t["total_tokens"] == len(serial) and t["dropped_tokens"] == len(serial) % L
        assert t["padding"] == 0 and sum(t["tokens_per_shard"]) == len(serial) - len(serial) % L
        assert stream_of(out) == serial[:len(serial) - len(serial) % L]
        assert all(len(r["input_ids"]) == L for r in dp.open(out))
        assert all(s["records"] == 7 for s in res.manifest["shards"][:-1])
    first = outs[(1, None)]
    assert first and all(o == first for o in outs.values())
    # doc_starts: where a document starts (the token after an EOS, or the stream's start)
    eos = Tokenizer.from_file(str(tok_path)).token_to_id("<|endoftext|>")
    starts = {i + 1 for i, x in enumerate(serial) if x == eos} | {0}
    for s, rec in enumerate(dp.open(tmp_path / "out1-None")):
        assert rec["doc_starts"] == sorted(p - s * L for p in starts if s * L <= p < (s + 1) * L)


def test_long_document_empty_document_and_padding(tmp_path, tok_path):
    write(tmp_path / "in" / "0 long.txt", words(1, 400))
    write(tmp_path / "in" / "1 empty.txt", "")
    write(tmp_path / "in" / "2 short.txt", "short")
    paths = sorted((tmp_path / "in").iterdir())
    serial = serial_stream(tok_path, texts_of(paths))
    L = 16
    assert len(serial) > 20 * L
    res = dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=tok_path, seq_len=L, shard_size=8,
                 last="pad", doc_starts=True, workers=1, allow_empty=False)
    recs = list(dp.open(tmp_path / "out"))
    pad = -len(serial) % L
    t = res.manifest["tokens"]
    assert (t["padding"], t["dropped_tokens"], t["documents"]) == (pad, 0, 2)
    assert res.manifest["errors"] == 1  # the empty file: EmptyFileError, as without a tokenizer
    assert [r["pad"] for r in recs] == [0] * (len(recs) - 1) + [pad]
    assert [x for r in recs for x in r["input_ids"]] == serial + [t["eos_id"]] * pad
    assert recs[0]["doc_starts"] == [0] and all(r["doc_starts"] == [] for r in recs[1:-1])
    assert len(recs) == -(-len(serial) // L) and t["total_tokens"] == len(serial)


@pytest.mark.slow
def test_undecodable_text_is_left_out_or_replaced(tmp_path, tok_path):
    write(tmp_path / "in" / "good.txt", "fine text here")
    write(tmp_path / "in" / "bad.txt", b"caf\xe9 au lait")
    res = dp.run([tmp_path / "in"], tmp_path / "strict", tokenizer=tok_path, seq_len=4, workers=1)
    assert res.manifest["tokens"]["documents"] == 1 and res.manifest["error_types"] == {"UnicodeDecodeError": 1}
    assert stream_of(tmp_path / "strict") == serial_stream(tok_path, ["fine text here"])[:4 * res.records]
    res = dp.run([tmp_path / "in"], tmp_path / "replace", tokenizer=tok_path, seq_len=4, workers=1,
                 encoding_errors="replace")
    assert res.manifest["tokens"]["documents"] == 2 and res.errors == 0
    full = serial_stream(tok_path, ["caf\ufffd au lait", "fine text here"])
    assert stream_of(tmp_path / "replace") == full[:len(full) // 4 * 4]


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_shards(tmp_path, tok_path):
    corpus(tmp_path / "in", n=60, size=lambda i: 300 + 40 * (i % 5))
    args = ["run", str(tmp_path / "in"), "--tokenizer", str(tok_path), "--seq-len", "64",
            "--shard-size", "50", "--partition-size", "20000", "--workers", "2", "--doc-starts", "-q"]
    fresh = subprocess.run(dask_prep_cli() + args + ["-o", str(tmp_path / "fresh")], timeout=240,
                           capture_output=True, text=True, env=env_without_client())
    assert fresh.returncode == 0, fresh.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(dask_prep_cli() + args + ["-o", str(out)], env=env_without_client(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / ".dask-prep").glob("t*.json"))) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists()
    again = subprocess.run(dask_prep_cli() + args + ["-o", str(out)], timeout=240,
                           capture_output=True, text=True, env=env_without_client())
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["run"]["resumed_partitions"] >= 3
    assert shard_bytes(out) == shard_bytes(tmp_path / "fresh") != {}
    assert manifest["tokens"] == json.loads((tmp_path / "fresh" / MANIFEST).read_text())["tokens"]


@pytest.mark.slow
def test_packed_on_a_real_dask_cluster_is_byte_identical_to_local(tmp_path, tok_path):
    paths = corpus(tmp_path / "in", n=20)
    common = dict(tokenizer=tok_path, seq_len=24, shard_size=9, partition_size=5000, last="pad")
    (tmp_path / "cluster").mkdir()
    with dask_processes(tmp_path / "cluster") as address:
        remote = dp.run([tmp_path / "in"], tmp_path / "remote", scheduler=address, **common)
    dp.run([tmp_path / "in"], tmp_path / "local", workers=1, **common)
    assert remote.workers == 2 and shard_bytes(tmp_path / "remote") == shard_bytes(tmp_path / "local")
    pad = remote.manifest["tokens"]["padding"]
    assert stream_of(tmp_path / "remote")[:len(stream_of(tmp_path / "remote")) - pad] == \
        serial_stream(tok_path, texts_of(paths))


def packing_cli(tmp_path, tok_path, *args):
    """``dask-prep run IN --tokenizer T --seq-len 8 ARGS`` on the corpus in ``tmp_path/in``."""
    return subprocess.run(dask_prep_cli() + ["run", str(tmp_path / "in"), "--tokenizer", str(tok_path),
                                             "--seq-len", "8", *map(str, args)],
                          capture_output=True, text=True, env=env_without_client(), timeout=120)


@pytest.mark.slow  # a real CLI run or several: seconds
def test_cli_packs_and_summarizes(tmp_path, tok_path):
    corpus(tmp_path / "in", n=5)
    r = packing_cli(tmp_path, tok_path, "-o", tmp_path / "out", "--workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    assert "sequences of 8" in r.stdout and "from 5 documents" in r.stdout
    assert sys.executable


def test_document_starts_as_mds_are_refused_before_a_cluster_starts(tmp_path, tok_path):
    """A sequence inside a long document starts no document, and MDS cannot hold an
    empty array: one line, exit 2, nothing written (it was a worker's traceback)."""
    corpus(tmp_path / "in", n=2)
    r = packing_cli(tmp_path, tok_path, "-o", tmp_path / "o", "--doc-starts", "--format", "mds")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "doc_starts cannot be written as MDS" in r.stderr
    assert not (tmp_path / "o").exists()
