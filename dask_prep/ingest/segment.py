"""Segmentation: text into sentences, sentences into words, for any script.

The default rules are fast and need nothing but ``regex``:

- text is NFC-normalized (a decomposed ``ü`` is one character, as typed);
- a sentence ends at . ! ? … and the ends of other scripts (``।`` ``؟`` ``۔``
  ``։`` ``።``) followed by space, at ``。！？`` (after a closing quote or
  bracket, not before it), and at a blank line; a dot after a common
  abbreviation (``Dr.``, ``e.g.``, ``z.`` ``B.``), an initial (``J.``) or a
  dotted acronym followed by a lower-case word (``the U.S. in``) does not end one;
- a word is a run of letters with their combining marks, digits and ``_``;
  each CJK character (ideographs and kana) is a word of its own.

Optional segmenters, used only when asked for: ``segmenter="pysbd"`` (or
``"pysbd:de"``, a language pysbd knows) for sentences, ``word_segmenter="jieba"``
for Chinese words. They are packages of their own (``pip install
'dask-prep[segment]'``); asking for one that is not installed is a
:class:`~dask_prep.errors.SegmenterNotInstalledError`.

>>> split_sentences("Dr. Smith met J. R. R. Tolkien. 你好世界。Bye!")
['Dr. Smith met J. R. R. Tolkien.', '你好世界。', 'Bye!']
>>> words("नमस्ते दुनिया, it's 3 o'clock 你好")
['नमस्ते', 'दुनिया', 'it', 's', '3', 'o', 'clock', '你', '好']
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import unicodedata

import regex

from ..errors import SegmenterNotInstalledError

__all__ = ["split_sentences", "words", "check_segmenters", "versions", "VERSION"]

#: Bump when the default rules change what they output: it is part of the
#: ``sentences`` converter's identity, so a rerun never mixes old and new shards.
VERSION = 2

_CJK = ("\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
        "\U00020000-\U0002fa1f\U00030000-\U0003134f")
_WORD = regex.compile(rf"[{_CJK}]|[\p{{L}}\p{{M}}\p{{N}}_--[{_CJK}]]+", regex.V1)
_ASCII_WORD = re.compile(r"[A-Za-z0-9_]+")  # the same tokens for ASCII text, faster
_RUN = regex.compile(r"[\p{L}\p{M}\p{N}_]+")  # a word of a segmenter's token

_ENDS = ".!?…‼⁇⁈⁉؟۔।॥։።"  # followed by space
_CJK_ENDS = "。！？｡"  # end a sentence by themselves
_CLOSERS = "\"'”’»)\\]」』）〕】｣"
#: A sentence's end and the space after it (a pattern that starts with its
#: characters, not a look-behind, so ``re`` skips to candidates quickly).
_SENTENCE_END = re.compile(rf"[{_ENDS}][{_CLOSERS}]?\s+|[{_CJK_ENDS}]+[{_CLOSERS}]?\s*|\n\s*\n")
_PARAGRAPH = re.compile(r"\n\s*\n")

#: Abbreviations that never end a sentence (lower case, without the last dot).
_ALWAYS = frozenset("""
dr mr mrs ms prof rev hon gen col lt sgt capt st mt fig figs vol vs cf e.g i.e approx
ca bzw vgl sog ggf inkl evtl d.h u.a z.b nr hr fr
им ул стр см рис напр гл проф акад
""".split())
#: Abbreviations that end a sentence unless a lower-case word or a number follows.
_BEFORE_LOWER = frozenset("etc jr sr inc ltd co corp no nos a.m p.m usw str tel млн млрд тыс руб коп".split())
_DOTTED = re.compile(r"(?:\w\.)+\w")
_OPENERS = "\"'“‘«([{"


def split_sentences(text: str, *, segmenter: str = "rules") -> list[str]:
    """The sentences of ``text``, stripped and NFC-normalized.

    ``segmenter``: ``"rules"`` (the default, above), ``"pysbd"`` or
    ``"pysbd:LANG"`` (pysbd's rules for language ``LANG``, English by default;
    blank lines still end sentences).

    >>> split_sentences("It costs 3.14 e.g. in the U.S. today. Was it? Yes!")
    ['It costs 3.14 e.g. in the U.S. today.', 'Was it?', 'Yes!']
    """
    found = _rule_sentences(text) if segmenter == "rules" else _pysbd_sentences(text, segmenter)
    return [_nfc(s) for s in found]


def words(sentence: str, *, word_segmenter: str = "rules") -> list[str]:
    """The word tokens of ``sentence`` (NFC-normalized first).

    ``word_segmenter``: ``"rules"`` (each CJK character a token) or ``"jieba"``
    (Chinese words as jieba segments them, the rest as by the rules).

    >>> words("Grüße aus Köln")
    ['Grüße', 'aus', 'Köln']
    """
    if word_segmenter == "rules":
        return _ASCII_WORD.findall(sentence) if sentence.isascii() else _WORD.findall(_nfc(sentence))
    sentence = _nfc(sentence)
    return [w for token in _jieba().cut(sentence) for w in _RUN.findall(token)]


def _nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


# -- the default rules ----------------------------------------------------------


def _rule_sentences(text: str) -> list[str]:
    """Cut ``text`` after each sentence end that does not end an abbreviation."""
    out, begin = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if m.group().count("\n") < 2 and _abbreviation(text, begin, m.start(), end):
            continue
        out.append(text[begin:end])
        begin = end
    out.append(text[begin:])
    return [s for s in (p.strip() for p in out) if s]


def _abbreviation(text: str, begin: int, dot: int, following: int) -> bool:
    """Whether the dot at ``text[dot]`` ends an abbreviation or an initial, not a
    sentence (``begin``: where the sentence began; ``following``: where the next word starts)."""
    if text[dot] != "." or text[dot + 1] in _CLOSERS or following == len(text):
        return False
    word = max(begin, text.rfind(" ", begin, dot) + 1, text.rfind("\n", begin, dot) + 1)
    core = text[word:dot].lstrip(_OPENERS)
    lower_next = text[following].islower() or text[following].isdigit()
    if len(core) == 1:  # an initial (J. R. R. Tolkien), or one of z. B., т. е., и т. д.
        return core.isupper() or (core.isalpha() and (lower_next or text[following + 1:following + 2] == "."))
    low = core.lower()
    return low in _ALWAYS or (lower_next and (low in _BEFORE_LOWER or _DOTTED.fullmatch(core) is not None))


# -- optional segmenters ----------------------------------------------------------

#: option value -> (package, what pip installs)
_PACKAGES = {"pysbd": "pysbd", "jieba": "jieba"}


def check_segmenters(segmenter: str, word_segmenter: str) -> None:
    """Refuse a segmenter that does not exist, or whose package is not installed."""
    name, _, language = segmenter.partition(":")
    if name not in ("rules", "pysbd") or (name == "rules" and language):
        raise ValueError(f"segmenter must be 'rules', 'pysbd' or 'pysbd:LANG', not {segmenter!r}")
    if word_segmenter not in ("rules", "jieba"):
        raise ValueError(f"word_segmenter must be 'rules' or 'jieba', not {word_segmenter!r}")
    for package in {name, word_segmenter} - {"rules"}:
        _require(package)
    if name == "pysbd" and language:
        from pysbd.languages import LANGUAGE_CODES
        if language not in LANGUAGE_CODES:
            raise ValueError(f"pysbd has no rules for language {language!r}; "
                             f"use one of {', '.join(sorted(LANGUAGE_CODES))}")


def versions(segmenter: str, word_segmenter: str) -> tuple:
    """What else decides the segmentation: the rules' version and the version
    of each optional segmenter chosen (never of one merely installed). Not the
    ``regex`` module's or Python's Unicode version: an upgrade would make every
    finished dataset refuse its rerun, for a change that at most touches
    characters newly added to Unicode (NFC of assigned ones never changes)."""
    chosen = sorted({segmenter.partition(":")[0], word_segmenter} - {"rules"})
    return (("segmentation", VERSION),
            *((p, importlib.metadata.version(_PACKAGES[p])) for p in chosen))


def _require(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise SegmenterNotInstalledError(
            f"segmenter {package!r} needs the package {_PACKAGES[package]!r}, which is not installed: "
            f"pip install {_PACKAGES[package]} (or pip install 'dask-prep[segment]')")


def _pysbd_sentences(text: str, segmenter: str) -> list[str]:
    seg = _pysbd(segmenter.partition(":")[2] or "en")
    return [s for p in _PARAGRAPH.split(text) if p.strip()
            for s in (s.strip() for s in seg.segment(p)) if s]


@functools.cache
def _pysbd(language: str):
    _require("pysbd")
    import pysbd
    return pysbd.Segmenter(language=language, clean=False)


@functools.cache
def _jieba():
    _require("jieba")
    import jieba
    return jieba.Tokenizer()
