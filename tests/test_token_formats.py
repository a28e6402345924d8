"""Formats trainers read natively, each read back by the trainer's own reader.

``tokens``: flat token files that ``numpy.memmap`` reads as nanoGPT does.
Records are the token contract: ``{"input_ids": [...]}`` (plus ``doc_starts``
and ``pad`` for packed sequences) or bare lists, made here by hand.
"""
from __future__ import annotations

import glob
import json
from collections import Counter

import dask.bag as db
import numpy as np
import pytest

import dask_prep as dp

from helpers import write as write_file

NAME = "out [1] #tok ::ü -x"  # a folder name with spaces, unicode, ::, #, [ and a leading dash
DOCS = [{"input_ids": list(range(i * 7 % 1000, i * 7 % 1000 + 1 + i % 13))} for i in range(211)]


def write(tmp_path, records, npartitions=4, shard_size=17, **kwargs):
    bag = db.from_sequence(records, npartitions=npartitions)
    return dp.write_shards(bag, tmp_path / NAME, shard_size=shard_size, **kwargs)


def memmap_sequences(out, manifest) -> list:
    """What a nanoGPT-style loader sees: numpy.memmap of each shard, cut by its offsets."""
    dtype = np.dtype(manifest["format_info"]["dtype"])
    seqs = []
    for s in manifest["shards"]:
        ids = np.memmap(out / s["file"], dtype=dtype, mode="r")
        idx = np.memmap(out / s["file"].replace(".tokens", ".idx"), dtype=np.int64, mode="r")
        assert len(idx) == s["records"] + 1 and idx[-1] == len(ids)
        seqs += [tuple(ids[a:b].tolist()) for a, b in zip(idx[:-1], idx[1:])]
    return seqs


def test_numpy_memmap_reads_every_token_back(tmp_path):
    m = write(tmp_path, DOCS, format="tokens")
    out = tmp_path / NAME
    got = memmap_sequences(out, m)
    assert Counter(got) == Counter(tuple(d["input_ids"]) for d in DOCS)
    info = m["format_info"]
    assert info["dtype"] == "uint32"  # no vocabulary size given: ids may need 32 bits
    assert info["total_tokens"] == sum(len(d["input_ids"]) for d in DOCS) == sum(info["tokens_per_shard"])
    assert info["tokens_per_shard"] == [len(np.memmap(out / s["file"], np.uint32, mode="r"))
                                        for s in m["shards"]]
    assert info["seq_len"] is None  # documents of many lengths
    assert dp.verify(out).ok
    # the dataset's own reader agrees, shard by shard, with the memmap
    assert [tuple(r["input_ids"]) for r in dp.open(out)] == got


@pytest.mark.parametrize("vocab_size,dtype", [(65536, "uint16"), (65537, "uint32"), (50257, "uint16")])
def test_the_dtype_comes_from_the_vocabulary_never_from_the_partitioning(tmp_path, vocab_size, dtype):
    top = [{"input_ids": [vocab_size - 1, 0]}]  # the largest id the vocabulary has
    made = []
    for n in (1, 5):
        m = write(tmp_path / str(n), DOCS[:50] + top, npartitions=n, format="tokens",
                  format_options={"vocab_size": vocab_size})
        assert m["format_info"]["dtype"] == dtype and m["errors"] == 0
        made.append(Counter(memmap_sequences(tmp_path / str(n) / NAME, m)))
    assert made[0] == made[1] == Counter(tuple(d["input_ids"]) for d in DOCS[:50] + top)


def test_packed_sequences_keep_their_document_starts_and_padding(tmp_path):
    L = 16
    packed = [{"input_ids": [(i * 31 + j) % 500 for j in range(L)], "doc_starts": [0, i % L] if i % L else [0],
               "pad": i % 3} for i in range(45)]
    m = write(tmp_path, packed, shard_size=10, format="tokens", format_options={"vocab_size": 500})
    assert m["format_info"]["seq_len"] == L and m["format_info"]["dtype"] == "uint16"
    assert m["format_info"]["total_tokens"] == 45 * L
    ids = np.concatenate([np.memmap(tmp_path / NAME / s["file"], np.uint16, mode="r") for s in m["shards"]])
    assert ids.reshape(-1, L).shape == (45, L)  # dense [N, L], as a trainer slices it
    key = lambda r: (tuple(r["input_ids"]), tuple(r["doc_starts"]), r["pad"])  # noqa: E731
    assert sorted(map(key, dp.open(tmp_path / NAME))) == sorted(map(key, packed))


def test_bare_lists_and_numpy_arrays_are_records_too(tmp_path):
    recs = [list(range(i + 1)) for i in range(20)] + [np.arange(5, dtype=np.int32)]
    m = write(tmp_path, recs, format="tokens")
    assert Counter(memmap_sequences(tmp_path / NAME, m)) == Counter(tuple(int(x) for x in r) for r in recs)


def test_an_id_that_does_not_fit_leaves_out_its_file_by_name(tmp_path):
    good = [write_file(tmp_path / "in" / f"good {i}.jsonl",
                       "".join(json.dumps({"input_ids": [i, j, 7]}) + "\n" for j in range(30)))
            for i in range(4)]
    write_file(tmp_path / "in" / "-bad ü::1.jsonl", json.dumps({"input_ids": [1, 70000]}) + "\n")
    write_file(tmp_path / "in" / "text.jsonl", json.dumps({"text": "no ids"}) + "\n")
    bag = dp.to_bag(tmp_path / "in", "jsonl")
    m = dp.write_shards(bag, tmp_path / NAME, format="tokens", shard_size=25,
                        format_options={"vocab_size": 65536})
    errors = dp.open(tmp_path / NAME).errors()
    assert {e["path"].rsplit("/", 1)[-1] for e in errors} == {"-bad ü::1.jsonl", "text.jsonl"}
    assert any("70000 does not fit vocab_size 65536" in e["message"] for e in errors)
    assert any("no 'input_ids'" in e["message"] for e in errors)
    assert m["total_records"] == 120 == len(memmap_sequences(tmp_path / NAME, m))
    assert len(good) == 4


def test_bad_format_options_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        write(tmp_path, DOCS, format="tokens", format_options={"vocab_size": 0})
    with pytest.raises(TypeError, match="unexpected keyword|takes no options"):
        write(tmp_path, DOCS, format="tokens", format_options={"vocab": 3})
    with pytest.raises(TypeError, match="takes no options"):
        write(tmp_path, DOCS, format="pickle", format_options={"vocab_size": 3})


def test_format_options_are_part_of_the_command(tmp_path):
    write(tmp_path, DOCS, format="tokens", format_options={"vocab_size": 1000})
    with pytest.raises(dp.OutputExistsError,
                       match="other inputs or options"):
        write(tmp_path, DOCS, format="tokens", format_options={"vocab_size": 100_000})


# -- megatron: read back by Megatron-LM's own IndexedDataset ---------------------------


def megatron_sequences(out, manifest) -> list:
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    seqs = []
    for prefix in manifest["format_info"]["path_prefixes"]:
        ds = IndexedDataset(str(out / prefix))
        assert ds.document_indices.tolist() == list(range(len(ds) + 1))  # one document a sequence
        seqs += [tuple(ds[i].tolist()) for i in range(len(ds))]
    return seqs


@pytest.mark.parametrize("vocab_size,dtype", [(None, "int32"), (65536, "uint16"), (200_000, "int32")])
@pytest.mark.slow  # a real CLI run or several: seconds
def test_megatron_indexed_dataset_reads_every_token_back(tmp_path, vocab_size, dtype):
    top = [{"input_ids": [(vocab_size or 2**31 - 1) - 1, 0]}]
    options = {"vocab_size": vocab_size} if vocab_size else {}
    m = write(tmp_path, DOCS + top, format="megatron", format_options=options)
    out = tmp_path / NAME
    got = megatron_sequences(out, m)
    assert Counter(got) == Counter(tuple(d["input_ids"]) for d in DOCS + top)
    info = m["format_info"]
    assert info["dtype"] == dtype and info["total_tokens"] == sum(len(g) for g in got)
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    assert IndexedDataset(str(out / info["path_prefixes"][0])).sequence_lengths.dtype == np.int32
    assert [tuple(r["input_ids"]) for r in dp.open(out)] == got and dp.verify(out).ok


@pytest.mark.slow
def test_megatron_packed_sequences_have_the_sequence_length(tmp_path):
    packed = [{"input_ids": [(i + j) % 100 for j in range(32)], "doc_starts": [0, 5], "pad": 0}
              for i in range(40)]
    m = write(tmp_path, packed, shard_size=16, format="megatron", format_options={"vocab_size": 100})
    assert m["format_info"]["seq_len"] == 32 and [s["records"] for s in m["shards"]] == [16, 16, 8]
    assert sorted(megatron_sequences(tmp_path / NAME, m)) == sorted(tuple(p["input_ids"]) for p in packed)


# -- mds: read back by MosaicML streaming's own StreamingDataset ----------------------
#
# mosaicml-streaming 0.13 pins numpy<2.2, huggingface-hub<1 (through transformers<5) and
# a torchvision that wants PyPI's torch, while this environment has numpy 2.4, the
# huggingface-hub>=1.31 that `datasets` needs and a CPU torch: installing it here would
# downgrade them. So the reader runs in a virtual environment of its own, made once with
# `python -m venv` + `pip install mosaicml-streaming==STREAMING` (from PyPI; about 2 minutes
# and 6 GB, for PyPI's torch) and kept under the temporary folder, keyed by the version.

STREAMING = "0.13.0"

READ_MDS = r"""
import json, sys
from streaming import StreamingDataset
ds = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=1)
plain = lambda v: v.tolist() if hasattr(v, "tolist") else v
by_index = [{k: plain(v) for k, v in ds[i].items()} for i in range(len(ds))]
iterated = [{k: plain(v) for k, v in s.items()} for s in ds]
print(json.dumps({"len": len(ds), "by_index": by_index, "iterated": iterated}))
"""


@pytest.fixture(scope="session")
def streaming_python():
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    home = Path(tempfile.gettempdir()) / f"dask-prep-mds-reader-{STREAMING}"
    python = home / "bin" / "python"
    if not (home / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"mosaicml-streaming=={STREAMING}"],
                       check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        (home / ".complete").touch()
    return python


def streaming_read(python, out) -> dict:
    import os
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(python), "-c", READ_MDS, str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mds_streaming_dataset_reads_every_token_back(tmp_path, streaming_python):
    docs = DOCS + [{"input_ids": list(range(300))}, {"input_ids": [65535, 0]}]  # shapes past 255
    m = write(tmp_path / "docs", docs, format="mds", format_options={"vocab_size": 65536})
    packed = [{"input_ids": [(i + j) % 500 for j in range(24)], "doc_starts": [0, i % 24] if i % 24 else [0],
               "pad": i % 4} for i in range(40)]
    p = write(tmp_path / "packed", packed, shard_size=16, format="mds")  # no vocabulary: uint32
    assert m["format_info"]["dtype"] == "uint16" and p["format_info"]["dtype"] == "uint32"
    got = streaming_read(streaming_python, tmp_path / "docs" / NAME)
    assert got["len"] == len(docs) and got["by_index"] == got["iterated"]
    assert Counter(tuple(r["input_ids"]) for r in got["by_index"]) == Counter(tuple(d["input_ids"]) for d in docs)
    assert [r["input_ids"] for r in got["by_index"]] == [r["input_ids"] for r in dp.open(tmp_path / "docs" / NAME)]
    got = streaming_read(streaming_python, tmp_path / "packed" / NAME)
    key = lambda r: (tuple(r["input_ids"]), tuple(r["doc_starts"]), r["pad"])  # noqa: E731
    assert sorted(map(key, got["by_index"])) == sorted(map(key, packed))
    for out in (tmp_path / "docs" / NAME, tmp_path / "packed" / NAME):
        assert dp.verify(out).ok  # the reader left nothing behind that verify minds


# -- parquet, the default: list<int32> token ids load with Hugging Face datasets --------


def test_parquet_list_int32_loads_with_hugging_face_datasets(tmp_path):
    import datasets
    import pyarrow as pa
    packed = [{"input_ids": [(i * 7 + j) % 50_000 for j in range(12)], "doc_starts": [0, i % 12], "pad": 0}
              for i in range(53)]
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("doc_starts", pa.list_(pa.int32())),
                        ("pad", pa.int32())])
    # datasets takes data_files as glob patterns ("[1]" is escaped) through fsspec, which
    # reads "::" in a local path as a chain of file systems: this folder has no "::"
    out = tmp_path / "out [1] #hf ü -x"
    m = dp.write_shards(db.from_sequence(packed, npartitions=4), out, shard_size=17, schema=schema)
    files = [glob.escape(str(out / s["file"])) for s in m["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.features["input_ids"].feature.dtype == "int32"
    assert len(ds) == 53 and ds.num_rows == m["total_records"]
    assert list(ds) == [dict(r) for r in dp.open(out)]  # shard order, record order
    key = lambda r: (tuple(r["input_ids"]), tuple(r["doc_starts"]), r["pad"])  # noqa: E731
    assert sorted(map(key, ds)) == sorted(map(key, packed))
    dense = ds.with_format("numpy")[:8]["input_ids"]
    assert dense.shape == (8, 12)  # dense [B, L] (datasets widens to int64 for numpy itself)


def test_mds_index_is_written_at_commit_and_removed_with_its_dataset(tmp_path):
    m = write(tmp_path, DOCS, format="mds")
    index = json.loads((tmp_path / NAME / "index.json").read_text())
    assert [s["raw_data"]["basename"] for s in index["shards"]] == [s["file"] for s in m["shards"]]
    assert [s["samples"] for s in index["shards"]] == [s["records"] for s in m["shards"]]
    write(tmp_path, DOCS, format="tokens", overwrite=True)
    assert not (tmp_path / NAME / "index.json").exists() and dp.verify(tmp_path / NAME).ok


def test_an_empty_sequence_is_a_record_mds_cannot_hold(tmp_path):
    write_file(tmp_path / "in" / "empty doc.jsonl", json.dumps({"input_ids": []}) + "\n")
    write_file(tmp_path / "in" / "good.jsonl", json.dumps({"input_ids": [1, 2]}) + "\n")
    m = dp.write_shards(dp.to_bag(tmp_path / "in", "jsonl"), tmp_path / NAME, format="mds")
    (err,) = dp.open(tmp_path / NAME).errors()
    assert err["path"].endswith("empty doc.jsonl") and "MDS cannot hold an empty array" in err["message"]
    assert m["total_records"] == 1
