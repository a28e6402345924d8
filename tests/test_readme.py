"""The README's worked example runs as written: raw .txt.gz to Megatron (and MDS) shards in two commands."""
from __future__ import annotations

import gzip
import random
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import dask_prep as dp
from helpers import dask_prep_cli, env_without_client

README = Path(__file__).parents[1] / "README.md"
SECTION = "### Tokens: raw `.txt.gz` to packed shards in two commands"


def example() -> tuple[list[str], list[str]]:
    """The section's commands (comments cut) and the summary lines it shows."""
    text = README.read_text()
    blocks = re.findall(r"```\n(.*?)```", text[text.index(SECTION):], re.S)
    commands = [line.split("  #")[0].strip() for line in blocks[0].splitlines() if line.strip()]
    return commands, [line for line in blocks[1].splitlines() if line.strip()]


def readme_corpus(root: Path) -> list[Path]:
    """The README's small corpus: 40 .txt.gz documents of 2,000 words each, in 4 folders."""
    rng, words, paths = random.Random(0), [f"w{i}" for i in range(3000)], []
    for i in range(40):
        p = root / "corpus" / f"part{i % 4}" / f"doc{i:03d}.txt.gz"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(gzip.compress(" ".join(rng.choice(words) for _ in range(2000)).encode(), mtime=0))
        paths.append(p)
    return sorted(paths, key=str)


def run(cwd: Path, command: str) -> str:
    args = shlex.split(command)
    assert args[0] == "dask-prep"
    r = subprocess.run(dask_prep_cli() + args[1:], cwd=cwd, capture_output=True, text=True,
                       env=env_without_client(), timeout=240)
    assert r.returncode == 0, f"{command}: {r.stderr}"
    return r.stdout


def serial_sequences(tok_path: Path, paths: list[Path], seq_len: int) -> np.ndarray:
    """encode_batch over the documents in source order, each followed by EOS, chopped into seq_len."""
    tok = Tokenizer.from_file(str(tok_path))
    eos = tok.token_to_id("<|endoftext|>")
    texts = [gzip.decompress(p.read_bytes()).decode() for p in paths]
    stream = [t for e in tok.encode_batch(texts, add_special_tokens=False) for t in e.ids + [eos]]
    return np.array(stream[:len(stream) // seq_len * seq_len]).reshape(-1, seq_len)


@pytest.mark.slow  # three real CLI runs: seconds
def test_the_readme_example_makes_megatron_and_mds_shards_of_the_serial_sequences(tmp_path):
    commands, summary = example()
    assert len(commands) == 2 and "--format megatron" in commands[1]
    paths = readme_corpus(tmp_path)
    run(tmp_path, commands[0])
    out = run(tmp_path, commands[1])
    assert all(line in out.splitlines() for line in summary), out  # the output the README shows
    seq_len = int(re.search(r"--seq-len (\d+)", commands[1]).group(1))
    want = serial_sequences(tmp_path / "tokenizer.json", paths, seq_len)
    mds = run(tmp_path, commands[1].replace("--format megatron", "--format mds").replace("shards/", "mds/"))
    assert "(mds)" in mds
    for name, fmt in (("shards", "megatron"), ("mds", "mds")):
        ds = dp.open(tmp_path / name)
        assert ds.format == fmt and len(ds) == len(want) > 8
        assert np.array_equal(np.array([r["input_ids"] for r in ds]), want)
        with ds.iter_batches(8) as batches:
            assert {b["input_ids"].shape for b in batches} <= {(8, seq_len), (len(want) % 8, seq_len)}
    assert (tmp_path / "mds" / "index.json").exists()
