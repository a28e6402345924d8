"""Converters: ``fn(path) -> iterable of records``, built-in or the user's own.

Built-ins, by name:

``text``       one record per document: ``{"path", "text"}`` (a name that is not UTF-8
               shows its bad bytes as ``\\xff`` escapes in ``path``)
``lines``      one record per non-blank line: ``{"text"}``
``jsonl``      one record per JSON line (a malformed line is reported, the rest kept)
``csv``        one record per row, keyed by the header: ``{column: str}``
``sentences``  one record per sentence: ``{"text", "words"}``, segmented for any script
               (:mod:`dask_prep.ingest.segment`): NFC text, letters kept with their
               marks, abbreviations and initials do not end a sentence, each CJK
               character is a word; options ``segmenter="pysbd"`` and
               ``word_segmenter="jieba"``

A user converter is any callable taking a path, or ``"module:func"`` or
``"path/to/file.py:func"``. Functions from files that workers cannot import are
shipped by value, so a converter in a script or notebook needs no installing.

>>> import dask_prep as dp
>>> dp.split_sentences("Hello there, Dr. Who. 你好世界。Bye!")
['Hello there, Dr. Who.', '你好世界。', 'Bye!']
>>> dp.words("It's 3 o'clock 你好 नमस्ते")
['It', 's', '3', 'o', 'clock', '你', '好', 'नमस्ते']
"""
from __future__ import annotations

import csv as _csv
import functools
import hashlib
import importlib
import inspect
import importlib.util
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .._version import __version__
from ..errors import ConverterNotFoundError
from ..options import ENCODING_ERRORS, check_choice
from ..paths import printable
from ..runtime.shipping import ByValue, shippable
from .bad_items import report_bad_item
from .readers import iter_lines, read_paragraphs, read_text
from .segment import check_segmenters, split_sentences, versions, words

__all__ = ["Converter", "register_converter", "resolve_converter", "converter_names",
           "split_sentences", "words"]


# -- built-in converters ------------------------------------------------------


def text(path: str, *, errors: str = "strict", storage_options: dict | None = None) -> list[dict]:
    return [{"path": printable(path), "text": read_text(path, errors, storage_options=storage_options)}]


def lines(path: str, *, errors: str = "strict", start=None, end=None,
          storage_options: dict | None = None) -> Iterator[dict]:
    for _, line in iter_lines(path, start, end, errors, storage_options=storage_options):
        if line.strip():
            yield {"text": line}


def jsonl(path: str, *, errors: str = "strict", start=None, end=None,
          storage_options: dict | None = None) -> Iterator:
    for lineno, line in iter_lines(path, start, end, errors, storage_options=storage_options):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            report_bad_item(f"malformed JSON: {exc}", line=lineno, error="JSONDecodeError")


def csv(path: str, *, errors: str = "strict", storage_options: dict | None = None) -> Iterator[dict]:
    text = read_text(path, errors, storage_options=storage_options)
    yield from _csv.DictReader(io.StringIO(text, newline=""))


def sentences(path: str, *, errors: str = "strict", start=None, end=None,
              storage_options: dict | None = None, segmenter: str = "rules",
              word_segmenter: str = "rules") -> Iterator[dict]:
    text = read_paragraphs(path, start, end, errors, storage_options=storage_options)
    for sentence in split_sentences(text, segmenter=segmenter):
        toks = words(sentence, word_segmenter=word_segmenter)
        if toks:
            yield {"text": sentence, "words": toks}


# -- registry -----------------------------------------------------------------


@dataclass(frozen=True)
class Converter:
    """A resolved converter: what the pipeline calls for each source.

    ``splittable`` converters accept ``start``/``end`` byte offsets (reading the
    lines, or for ``sentences`` the paragraphs, that start in that range), so one
    large uncompressed file can be converted in parallel pieces. A converter
    whose function takes a ``storage_options`` keyword is given the run's (for
    remote sources); others open their sources themselves. ``depends`` names
    what else decides its records, as ``(name, version)`` pairs (for
    ``sentences``: the segmentation rules, the Unicode data, the segmenters).
    """

    name: str
    fn: Callable
    splittable: bool = False
    options: tuple = ()
    depends: tuple = ()

    def __call__(self, path: str, start: int | None = None, end: int | None = None, *,
                 storage_options: dict | None = None) -> Iterable:
        kwargs = dict(self.options)
        if start is not None or end is not None:
            kwargs.update(start=start, end=end)
        if storage_options and self.takes_storage_options:
            kwargs["storage_options"] = storage_options
        return self.fn(path, **kwargs)

    @functools.cached_property
    def takes_storage_options(self) -> bool:
        return _takes_storage_options(self.fn)

    @functools.cached_property
    def identity(self) -> str:
        """What decides this converter's records: its name, options and code
        (a sha256 of the code it runs; the dask-prep version for built-ins) and
        what else it depends on."""
        ident = f"{self.name}|{sorted(self.options)}|{callable_identity(self.fn)}"
        return ident + (f"|{list(self.depends)}" if self.depends else "")


def _takes_storage_options(fn: Callable) -> bool:
    target = getattr(fn, "takes_storage_options", None)
    if target is not None:
        return target
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "storage_options" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def callable_identity(fn: Callable) -> str:
    """A stable name for what ``fn`` computes: never Dask's ``tokenize`` (whose
    hash changes with the packages installed). Built-ins: the dask-prep
    version; shipped by value: a sha256 of the pickled function; else a sha256
    of its source code."""
    ident = getattr(fn, "dask_prep_identity", None)
    if ident is not None:
        return ident() if callable(ident) else str(ident)
    if isinstance(fn, ByValue):
        return "by-value:" + hashlib.sha256(fn.payload).hexdigest()
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if module.split(".")[0] == "dask_prep":
        return f"{module}:{qualname}@{__version__}"
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = repr(fn)
    return f"{module}:{qualname}:" + hashlib.sha256(source.encode()).hexdigest()


_REGISTRY: dict[str, tuple[Callable, bool]] = {
    "text": (text, False),
    "lines": (lines, True),
    "jsonl": (jsonl, True),
    "csv": (csv, False),
    "sentences": (sentences, True),  # split at blank lines, which end sentences anyway
}
_BUILTIN = frozenset(_REGISTRY)


def converter_names() -> list[str]:
    return sorted(_REGISTRY)


def register_converter(name: str, fn: Callable, *, splittable: bool = False,
                       overwrite: bool = False) -> None:
    """Make ``fn`` available by ``name`` (e.g. for ``--converter name``).

    ``splittable=True`` promises ``fn(path, start=, end=)`` reads only lines
    starting in that byte range. A taken name is refused unless ``overwrite``.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"converter {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = (fn, splittable)


def resolve_converter(spec, *, encoding_errors: str = "strict", segmenter: str = "rules",
                      word_segmenter: str = "rules") -> Converter:
    """Turn a name, ``module:func``, ``file.py:func`` or callable into a :class:`Converter`.

    ``segmenter`` and ``word_segmenter`` are options of the built-in
    ``sentences`` converter (:func:`~dask_prep.ingest.segment.split_sentences`,
    :func:`~dask_prep.ingest.segment.words`); another converter refuses them.
    """
    check_choice("encoding_errors", encoding_errors, ENCODING_ERRORS)
    check_segmenters(segmenter, word_segmenter)
    if isinstance(spec, str) and spec == "sentences" and _REGISTRY[spec][0] is sentences:
        return _sentences(encoding_errors, segmenter, word_segmenter)
    if (segmenter, word_segmenter) != ("rules", "rules"):
        raise ValueError(f"segmenter and word_segmenter are options of the built-in 'sentences' "
                         f"converter, not of {getattr(spec, 'name', spec)!r}; give it "
                         "dask_prep.resolve_converter('sentences', segmenter=...) instead")
    if isinstance(spec, Converter):
        return spec
    if isinstance(spec, str) and spec in _REGISTRY:
        fn, splittable = _REGISTRY[spec]
        options = (("errors", encoding_errors),) if spec in _BUILTIN else ()
        return Converter(spec, _ship(fn), splittable, options)
    if isinstance(spec, str) and ":" in spec:
        return Converter(spec, _ship(_load(spec)))
    if callable(spec):
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', repr(spec))}"
        return Converter(name, _ship(spec))
    raise ConverterNotFoundError(
        f"unknown converter {spec!r}; use one of {', '.join(converter_names())}, "
        "'module:func', 'path/to/file.py:func' or a Python callable")


def _sentences(encoding_errors: str, segmenter: str, word_segmenter: str) -> Converter:
    options = (("errors", encoding_errors), ("segmenter", segmenter), ("word_segmenter", word_segmenter))
    return Converter("sentences", sentences, True, options, versions(segmenter, word_segmenter))


def _load(spec: str) -> Callable:
    target, _, func = spec.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        if not os.path.isfile(target):
            raise ConverterNotFoundError(f"converter file {target!r} does not exist (from {spec!r})")
        module = _exec_file(target, spec)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            # as ``python -m`` would: a module in the working directory
            local = os.path.join(*target.split(".")) + ".py"
            if exc.name != target.split(".")[0]:  # the module itself imports what is missing
                raise ConverterNotFoundError(_broken(target, spec, exc)) from None
            if not os.path.isfile(local):
                raise ConverterNotFoundError(
                    f"cannot import module {target!r} for converter {spec!r}: {exc}") from None
            module = _exec_file(local, spec)
        except Exception as exc:
            raise ConverterNotFoundError(_broken(target, spec, exc)) from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConverterNotFoundError(f"{target!r} has no function {func!r} (from converter {spec!r})")
    return fn


def _exec_file(target: str, spec: str):
    """The module in the file ``target``; an error in it is one line naming the file."""
    modname = "dask_prep_user_" + re.sub(r"\W", "_", os.path.abspath(target))
    module_spec = importlib.util.spec_from_file_location(modname, target)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[modname] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[modname]
        raise ConverterNotFoundError(_broken(target, spec, exc)) from None
    return module


def _broken(target: str, spec: str, exc: BaseException) -> str:
    """``converter file 'conv.py' line 3: SyntaxError: '(' was never closed``."""
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    if line is None:
        tb = exc.__traceback__
        frames = []
        while tb is not None:
            frames.append(tb)
            tb = tb.tb_next
        mine = [f for f in frames if os.path.abspath(f.tb_frame.f_code.co_filename) == os.path.abspath(target)]
        here = mine or [f for f in frames[1:] if not f.tb_frame.f_code.co_filename.startswith("<")]
        line = here[-1].tb_lineno if here else None  # the innermost frame of the user's code
    what = "converter file" if target.endswith(".py") else "converter module"
    where = f" line {line}" if line else ""
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return f"{what} {target!r}{where}: {type(exc).__name__}: {message} (from converter {spec!r})"


def _ship(fn: Callable) -> Callable:
    """``fn`` as workers can run it; a function shipped by value says up front
    whether it takes ``storage_options`` (its signature is not visible later)."""
    shipped = shippable(fn)
    if isinstance(shipped, ByValue) and shipped.takes_storage_options is None:
        shipped.takes_storage_options = _takes_storage_options(fn)
    return shipped
