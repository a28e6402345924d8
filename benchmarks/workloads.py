"""Synthetic corpora for benchmarks, deterministic for a given size and seed.

- ``many_small``: tens of thousands of small gzip files of English-like text
  (a few hundred bytes to a few KB each), for the built-in ``sentences`` converter;
- ``cpu_heavy``: a few thousand plain ``.txt`` files of 10-30 KB, for the
  ``heavy`` converter below, whose per-word work dominates the run;
- ``skewed``: plain ``.txt`` files from 500 B to 8 MB: thousands of tiny ones,
  hundreds of medium ones and a few huge ones;
- ``one_big_file``: one JSON-lines file of ``size_mb`` megabytes, records
  ``{"id", "title", "text", "score"}`` with 300 B - 3 KB of text each;
- ``documents``: ``.txt.gz`` documents of 2-100 KB (log-uniform) of English-like
  text over a vocabulary of 30,000 words (the common words above, then made-up
  words of 1-4 syllables), Zipf-distributed, so a subword tokenizer splits
  most words and its word cache misses: the corpus of ``benchmarks/tokens.py``;
- ``doubled``: hard links to every file of another corpus, twice over, so a
  run over it yields each record of that corpus exactly twice.

``cached(name, data_dir, **sizes)`` builds a corpus once under ``data_dir`` and
reuses it afterwards (a hidden ``.complete`` file marks a finished corpus;
dask-prep skips hidden entries when it walks the folder).
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import shutil
import zlib
from collections import Counter
from pathlib import Path

from dask_prep import split_sentences, words
from dask_prep.ingest.readers import read_text

__all__ = ["many_small", "cpu_heavy", "skewed", "one_big_file", "documents", "doubled", "heavy", "cached",
           "GENERATORS", "VERSION"]

#: Bump when a generator changes, so cached corpora are rebuilt.
VERSION = 1

WORDS = tuple("""
the of and to in a is that for it as was with be by on not he this are or his from at
which but have an they you were her she there one all we their been has would when if
can more no will out so up said what its about into than them only other new some could
time these two may then do first any my now such like our over man me even most made
after also did many before must through back years where much your way well down should
because each just those people how too little state good very make world still own see
men work long get here between both life being under never day same another know while
last might us great old year off come since against go came right used take three
states himself few house use during without again place around however home small found
thought went say part once general high upon school every does got united left number
course war until always away something fact though water less public put think almost
hand enough far took head yet government system better set told nothing night end why
called different whole side week order face point business group room city law case
question reason voice river mountain garden letter market window music paper story
""".split())
#: Zipf-like frequencies: the word of rank r is drawn with weight 1/r.
CUM_WEIGHTS = tuple(itertools.accumulate(1 / r for r in range(1, len(WORDS) + 1)))
VOCAB_SIZE = 50_000
#: The ``heavy`` converter's vocabulary: word -> id, the same in every process.
VOCAB = {w: zlib.crc32(w.encode()) % VOCAB_SIZE for w in WORDS}


def _sentence(rng: random.Random) -> str:
    n = rng.randint(4, 18)
    toks = rng.choices(WORDS, cum_weights=CUM_WEIGHTS, k=n)
    if n > 8 and rng.random() < 0.3:
        toks[rng.randrange(2, n - 2)] += ","
    text = " ".join(toks)
    return text[0].upper() + text[1:] + rng.choice(".....!?")


def _text(rng: random.Random, nbytes: int) -> str:
    """Sentences in paragraphs until about ``nbytes`` characters."""
    parts, size = [], 0
    while size < nbytes:
        s = _sentence(rng)
        parts.append(s + ("\n\n" if rng.random() < 0.15 else " "))
        size += len(s) + 1
    return "".join(parts).rstrip() + "\n"


def _path(root: Path, i: int, suffix: str) -> Path:
    """1,000 files per folder: ``root/d000/f000000.txt``."""
    folder = root / f"d{i // 1000:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"f{i:06d}{suffix}"


def many_small(root, n_files: int = 20_000, seed: int = 0) -> Path:
    """``n_files`` gzip files of 300 B to ~5 KB of text (log-uniform) under ``root``."""
    root, rng = Path(root), random.Random(seed)
    for i in range(n_files):
        data = _text(rng, int(300 * 2 ** rng.uniform(0, 4))).encode()
        _path(root, i, ".txt.gz").write_bytes(gzip.compress(data, mtime=0))
    return root


def cpu_heavy(root, n_files: int = 2_000, seed: int = 0) -> Path:
    """``n_files`` plain text files of 10-30 KB under ``root``."""
    root, rng = Path(root), random.Random(seed)
    for i in range(n_files):
        _path(root, i, ".txt").write_text(_text(rng, rng.randint(10_000, 30_000)))
    return root


def skewed(root, n_tiny: int = 6_000, n_medium: int = 240, n_huge: int = 8, seed: int = 0) -> Path:
    """Tiny (0.5-5 KB), medium (50-200 KB) and huge (4-8 MB) text files, shuffled by name."""
    root, rng = Path(root), random.Random(seed)
    sizes = ([rng.randint(500, 5_000) for _ in range(n_tiny)]
             + [rng.randint(50_000, 200_000) for _ in range(n_medium)]
             + [rng.randint(4_000_000, 8_000_000) for _ in range(n_huge)])
    rng.shuffle(sizes)
    for i, size in enumerate(sizes):
        _path(root, i, ".txt").write_text(_text(rng, size))
    return root


def one_big_file(root, size_mb: int = 2_000, seed: int = 0) -> Path:
    """``root/corpus.jsonl`` of about ``size_mb`` MB: one JSON object per line."""
    root, rng = Path(root), random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    pool = [_text(rng, rng.randint(300, 3_000)).strip() for _ in range(4_000)]
    target, size, i = size_mb * 1_000_000, 0, 0
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        while size < target:
            title = " ".join(rng.choices(WORDS, k=rng.randint(2, 6))).title()
            line = json.dumps({"id": i, "title": title, "text": rng.choice(pool),
                               "score": round(rng.random(), 4)}) + "\n"
            f.write(line)
            size += len(line)
            i += 1
    return root


SYLLABLES = tuple(c + v for c in ("", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s",
                                     "t", "v", "w", "st", "tr", "ch", "th", "pr", "gr")
                  for v in ("a", "e", "i", "o", "u", "ou", "ea", "ar", "er", "in", "on", "en"))


def _lexicon(n: int, seed: int) -> tuple[list[str], list[float]]:
    """``n`` distinct words (``WORDS`` first) and their Zipf cumulative weights."""
    rng, lex, seen = random.Random(seed), list(WORDS), set(WORDS)
    while len(lex) < n:
        w = "".join(rng.choices(SYLLABLES, k=rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            lex.append(w + rng.choice(("", "", "", "s", "ed", "ing", "ly")))
    return lex, list(itertools.accumulate(1 / r for r in range(1, n + 1)))


def _document(rng: random.Random, lex: list[str], cum: list[float], nbytes: int) -> str:
    parts, size = [], 0
    while size < nbytes:
        toks = rng.choices(lex, cum_weights=cum, k=rng.randint(4, 24))
        if len(toks) > 8 and rng.random() < 0.4:
            toks[rng.randrange(2, len(toks) - 2)] += ","
        s = " ".join(toks)
        s = s[0].upper() + s[1:] + rng.choice(".....!?")
        parts.append(s + ("\n\n" if rng.random() < 0.12 else " "))
        size += len(s) + 1
    return "".join(parts).rstrip() + "\n"


def documents(root, size_mb: int = 100, seed: int = 0, vocabulary: int = 30_000) -> Path:
    """About ``size_mb`` MB of text as ``.txt.gz`` documents of 2-100 KB under ``root``."""
    root, rng = Path(root), random.Random(seed)
    lex, cum = _lexicon(vocabulary, seed)
    total, i = 0, 0
    while total < size_mb * 1_000_000:
        data = _document(rng, lex, cum, int(2_000 * 50 ** rng.random())).encode()
        _path(root, i, ".txt.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
        total, i = total + len(data), i + 1
    return root


def doubled(root, source: str) -> Path:
    """``root/a`` and ``root/b``, each with a hard link to every file under ``source``."""
    root, source = Path(root), Path(source)
    for copy in ("a", "b"):
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                link = root / copy / path.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, link)
    return root


def heavy(path: str):
    """Converter: one ``{"ids", "n_words"}`` per sentence, with deliberate per-word CPU work.

    Words are lowercased and mapped to ids through ``VOCAB`` (unknown words by
    hash). The character-trigram counts are discarded: they stand in for the
    per-word work of a real tokenizer.
    """
    for sentence in split_sentences(read_text(path)):
        toks = [w.lower() for w in words(sentence)]
        if not toks:
            continue
        grams = Counter()
        for w in toks:
            padded = f"^{w}$"
            grams.update(padded[i:i + 3] for i in range(len(padded) - 2))
        ids = [VOCAB.get(w, zlib.crc32(w.encode()) % VOCAB_SIZE) for w in toks]
        yield {"ids": ids, "n_words": len(toks)}


GENERATORS = {"many-small": many_small, "cpu-heavy": cpu_heavy, "skewed": skewed,
              "one-big-file": one_big_file, "documents": documents, "doubled": doubled}


def cached(name: str, data_dir, **sizes) -> Path:
    """The corpus ``GENERATORS[name](**sizes)`` under ``data_dir``, built on first use."""
    tag = "-".join(f"{k}{Path(str(v)).name}" for k, v in sorted(sizes.items()))
    root = Path(data_dir) / f"{name}-v{VERSION}-{tag}"
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    GENERATORS[name](tmp, **sizes)
    (tmp / ".complete").touch()
    os.replace(tmp, root)
    return root
