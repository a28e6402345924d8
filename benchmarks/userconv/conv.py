"""A user's converter, as a user writes it (passed as ``conv.py:convert``): it
opens and decompresses the file itself, splits sentences and words with two
regular expressions, and returns a list of dicts."""
import gzip
import re

SENTENCE = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"\w+")


def convert(path):
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    out = []
    for sentence in SENTENCE.split(text):
        sentence = sentence.strip()
        if sentence:
            out.append({"text": sentence, "words": WORD.findall(sentence)})
    return out
