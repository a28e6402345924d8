"""Vocabulary: counted on the cluster, deterministic, saved and loaded; words -> int32 ids on disk."""
import json
import pickle
from collections import Counter

import dask.bag as db
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dask_prep as dp
from dask_prep.ingest.converters import sentences
from helpers import make_corpus, serial_records

WORDS = [["b", "a", "c"], ["a", "d"], ["c", "b", "e", "a"], ["f"], ["d", "b"]]


def bag_of(word_lists, npartitions):
    return db.from_sequence([{"words": w} for w in word_lists], npartitions=npartitions)


def expected_order(counter, min_freq=1):
    return [w for w, n in sorted(counter.items(), key=lambda wn: (-wn[1], wn[0])) if n >= min_freq]


def test_counts_on_cluster_match_a_serial_count(client, tmp_path):
    paths = make_corpus(tmp_path / "c", n=12, sentences=10)
    bag = dp.to_bag(dp.discover(tmp_path / "c"), converter="sentences", partition_size=8192)
    assert bag.npartitions > 3
    vocab = dp.build_vocab(bag)
    counter = Counter(w for r in serial_records(paths, sentences) for w in r["words"])
    assert vocab.tokens == ("<pad>", "<unk>", *expected_order(counter))
    assert vocab.counts[2:] == tuple(counter[w] for w in vocab.tokens[2:])


def test_ties_broken_by_word_and_same_whatever_the_partitioning():
    ties = [["z", "y", "x"], ["x", "y", "z"], ["m"], ["m"], ["q", "q"]]
    vocabs = [dp.build_vocab(bag_of(ties, n), size=5) for n in (1, 2, 5)]
    assert vocabs[0].tokens == ("<pad>", "<unk>", "m", "q", "x")  # all count 2: by word
    assert vocabs[0] == vocabs[1] == vocabs[2]
    assert vocabs[0].digest == vocabs[2].digest


def test_size_min_freq_and_specials():
    vocab = dp.build_vocab(bag_of(WORDS, 2), size=4, min_freq=2, specials=("<pad>", "<unk>", "<s>"))
    assert vocab.tokens == ("<pad>", "<unk>", "<s>", "a")  # size counts the specials
    vocab = dp.build_vocab(bag_of(WORDS, 2), min_freq=2)
    assert vocab.tokens == ("<pad>", "<unk>", "a", "b", "c", "d")
    assert (vocab.pad_id, vocab.unk_id, vocab["f"], vocab["a"]) == (0, 1, 1, 2)
    assert "f" not in vocab and "a" in vocab


def test_a_special_seen_in_the_text_keeps_its_special_id():
    vocab = dp.build_vocab(bag_of([["<unk>", "<unk>", "w"]], 1))
    assert vocab.tokens == ("<pad>", "<unk>", "w")


def test_from_shardsets_reads_the_column_in_tasks(tmp_path):
    bag = bag_of(WORDS, 3)
    dp.write_shards(bag, tmp_path / "pq", shard_size=2)
    dp.write_shards(bag, tmp_path / "pkl", shard_size=2, format="pickle")
    want = dp.build_vocab(bag)
    assert dp.build_vocab(dp.open(tmp_path / "pq")) == want
    assert dp.build_vocab(dp.open(tmp_path / "pkl", allow_pickle=True)) == want


def test_save_and_load_round_trip(tmp_path):
    vocab = dp.build_vocab(bag_of(WORDS + [["été", "東京"]], 2))
    vocab.save(tmp_path / "vocab.json")
    saved = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert saved["tokens"][:2] == ["<pad>", "<unk>"] and "東京" in saved["tokens"]
    loaded = dp.Vocab.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.ids(["a", "東京", "nope"]).tolist() == [vocab["a"], vocab["東京"], 1]
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temporary left behind


def test_load_refuses_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"tokens": ["a"]}')
    with pytest.raises(ValueError, match="not a version 1 dask-prep vocabulary"):
        dp.Vocab.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{nope")
    with pytest.raises(ValueError, match="not a vocabulary file"):
        dp.Vocab.load(tmp_path / "y.json")


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="size=1 leaves no room for the 2 specials"):
        dp.build_vocab(bag_of(WORDS, 1), size=1)
    with pytest.raises(ValueError, match="min_freq must be a positive integer"):
        dp.build_vocab(bag_of(WORDS, 1), min_freq=0)
    with pytest.raises(ValueError, match="unk token '<oov>' is not among specials"):
        dp.Vocab(["<pad>", "<unk>"], unk="<oov>")
    with pytest.raises(ValueError, match="'a' appears twice"):
        dp.Vocab(["<pad>", "<unk>", "a", "a"])
    with pytest.raises(TypeError, match="dask bag of records or a ShardSet"):
        dp.build_vocab([["a"]])


def test_token_ids_bag_step_gives_int32_with_unk():
    vocab = dp.Vocab(["<pad>", "<unk>", "a", "b"])
    recs = dp.token_ids(bag_of([["a", "x", "b"], []], 1), vocab).compute()
    assert recs[0]["words"] == ["a", "x", "b"]
    assert recs[0]["token_ids"].dtype == np.int32 and recs[0]["token_ids"].tolist() == [2, 1, 3]
    assert recs[1]["token_ids"].tolist() == []
    plain = dp.token_ids(bag_of([["b"]], 1), vocab, out="ids", keep=False, as_list=True).compute()
    assert plain == [{"ids": [3]}]


def test_run_with_token_ids_stores_list_int32_ragged(client, tmp_path):
    paths = make_corpus(tmp_path / "c", n=9, sentences=8)
    vocab = dp.build_vocab(dp.to_bag(dp.discover(tmp_path / "c"), converter="sentences"), size=30)
    conv = dp.with_token_ids("sentences", vocab)
    res = dp.run([tmp_path / "c"], tmp_path / "out", converter=conv, shard_size=100)
    schema = pq.read_schema(tmp_path / "out" / "shard-00000.parquet")
    assert schema.field("token_ids").type == pa.list_(pa.int32())
    assert res.manifest["converter"] == "sentences+token_ids"
    stored = dp.open(tmp_path / "out").to_table()
    lengths = pa.compute.list_value_length(stored.column("token_ids")).to_pylist()
    assert lengths == [len(w) for w in stored.column("words").to_pylist()]  # not padded
    want = sorted(vocab.ids(r["words"]).tolist() for r in serial_records(paths, sentences))
    assert sorted(stored.column("token_ids").to_pylist()) == want


def test_pickle_shards_hold_plain_lists(tmp_path):
    vocab = dp.Vocab(["<pad>", "<unk>", "a", "b"])
    dp.write_shards(dp.token_ids(bag_of(WORDS, 2), vocab, as_list=True), tmp_path, shard_size=3,
                    format="pickle")
    with open(tmp_path / "shard-00000.pkl", "rb") as f:
        first = pickle.load(f)[0]
    assert first["token_ids"] == [3, 2, 1] and type(first["token_ids"]) is list


def test_same_vocab_same_fingerprint_so_runs_resume(tmp_path):
    one = dp.with_token_ids("sentences", dp.Vocab(["<pad>", "<unk>", "a"]))
    two = dp.with_token_ids("sentences", dp.Vocab(["<pad>", "<unk>", "a"]))
    other = dp.with_token_ids("sentences", dp.Vocab(["<pad>", "<unk>", "b"]))
    from dask.base import tokenize
    assert tokenize(one) == tokenize(two) != tokenize(other)
