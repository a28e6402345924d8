"""dask-prep tokenizer train: a byte-level BPE from the corpus, deterministic, usable by --tokenizer."""
from __future__ import annotations

import json
import subprocess

import pytest
from tokenizers import Tokenizer

import dask_prep as dp
from dask_prep.tokens.train import train_tokenizer
from helpers import dask_prep_cli, env_without_client, write
from test_tokens import corpus, serial_stream, stream_of, texts_of, words


@pytest.mark.slow
def test_training_twice_gives_identical_files_usable_by_run(tmp_path):
    paths = corpus(tmp_path / "in", n=16)
    write(tmp_path / "in" / "z.txt.gz", words(99, 50))  # compressed sources are read on the workers
    args = ["tokenizer", "train", str(tmp_path / "in"), "--vocab-size", "280", "--workers", "2",
            "--partition-size", "8192"]
    outs = []
    for name in ("a tok.json", "b tok.json"):
        r = subprocess.run(dask_prep_cli() + args + ["-o", str(tmp_path / name)], capture_output=True,
                           text=True, env=env_without_client(), timeout=240)
        assert r.returncode == 0, r.stderr
        assert "280 tokens, trained on 17 documents" in r.stdout
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    tok = Tokenizer.from_file(str(tmp_path / "a tok.json"))
    assert tok.get_vocab_size() == 280 and tok.token_to_id("<|endoftext|>") == 0
    odd = "naïve ☃ \x00 bytes 😀"
    assert tok.decode(tok.encode(odd).ids) == odd  # byte-level: nothing is unknown
    res = dp.run([tmp_path / "in"], tmp_path / "out", tokenizer=tmp_path / "a tok.json", seq_len=16,
                 workers=1)
    serial = serial_stream(tmp_path / "a tok.json", texts_of(paths) + [words(99, 50)])
    assert res.manifest["tokens"]["eos_id"] == 0
    assert stream_of(tmp_path / "out") == serial[:len(serial) // 16 * 16]


@pytest.mark.slow  # a real CLI run or several: seconds
def test_sample_and_seed_choose_the_documents(tmp_path):
    # 200 distinct documents (words() repeats after 23): the kept count is then
    # Binomial(200, 0.5), and 70..130 is over 4 standard deviations either side
    docs = [f"doc{i} " + words(i, 30) for i in range(200)]
    write(tmp_path / "in" / "a.jsonl", "".join(json.dumps({"body": d}) + "\n" for d in docs))
    common = dict(vocab_size=300, converter="jsonl", text_field="body")
    full = train_tokenizer([tmp_path / "in"], tmp_path / "full.json", **common)
    half = train_tokenizer([tmp_path / "in"], tmp_path / "half.json", sample=0.5, seed=1, **common)
    again = train_tokenizer([tmp_path / "in"], tmp_path / "again.json", sample=0.5, seed=1,
                            partition_size=6000, **common)
    other = train_tokenizer([tmp_path / "in"], tmp_path / "other.json", sample=0.5, seed=2, **common)
    assert full.documents == 200 and 70 < half.documents < 130
    assert (half.documents, half.sha256) == (again.documents, again.sha256)  # any partitioning
    assert other.documents != half.documents or other.sha256 != half.sha256
    with pytest.raises(ValueError, match="sample must be a fraction"):
        train_tokenizer([tmp_path / "in"], tmp_path / "x.json", sample=0, **common)
