"""Formats trainers read natively, each read back by the trainer's own reader.

``tokens``: flat token files that ``numpy.memmap`` reads as nanoGPT does.
Records are the token contract: ``{"input_ids": [...]}`` (plus ``doc_starts``
and ``pad`` for packed sequences) or bare lists, made here by hand.
"""
from __future__ import annotations

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


def test_megatron_packed_sequences_have_the_sequence_length(tmp_path):
    packed = [{"input_ids": [(i + j) % 100 for j in range(32)], "doc_starts": [0, 5], "pad": 0}
              for i in range(40)]
    m = write(tmp_path, packed, shard_size=16, format="megatron", format_options={"vocab_size": 100})
    assert m["format_info"]["seq_len"] == 32 and [s["records"] for s in m["shards"]] == [16, 16, 8]
    assert sorted(megatron_sequences(tmp_path / NAME, m)) == sorted(tuple(p["input_ids"]) for p in packed)
