"""The token job: documents -> token ids on the workers -> exact shards of documents or sequences.

Two kinds of task, both on the workers:

1. **tokenize** (one per partition, fused with its conversion): the text of
   each record, encoded in batches by the process's cached tokenizer, BOS/EOS
   added, saved as the partition's token stream (``tNNNNN.ids``, ``uint32``)
   and document lengths (``tNNNNN.docs``) in the work folder, then a marker
   (``tNNNNN.json``: counts, errors, the partition's key);
2. **cut** (one per shard): shard ``k``'s tokens read from the partitions'
   streams (:mod:`dask_prep.tokens.pack` says which), made into records
   (``{"input_ids": [...]}``, packed: ``L`` ids, ``doc_starts``, ``pad``) and
   written by the format plugin; a marker ``sNNNNN.json`` lets a resume keep it.

A shard is cut as soon as the partitions it takes from, and all before them,
are tokenized, so cutting overlaps tokenizing. The shards depend only on the
token stream in source order: byte-identical for any number of workers.
Everything else (the folder, lock, resume rules, errors, commit, manifest) is
the write job's (:class:`~dask_prep.write.job.WriteJob`).
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace

import dask
import numpy as np

from ..errors import ConversionError, EmptyDatasetError, SourceError
from ..options import TokenOptions, WriteOptions
from ..runtime.execute import execute
from ..runtime.graph import fused_tasks
from ..write.formats import format_class
from ..write.job import WriteJob, _sha256
from ..write.manifest import VERSION, Manifest
from ..write.output import WORK, OutputDir
from ..write.partition import CHUNK, fewer_collections
from ..write.results import ShardInfo
from ..write.shards import WriteSpec, write_shard
from .encode import DOCS, IDS, encode_partition
from .pack import Planner, ShardPlan, doc_starts_in
from .tokenizer import TokenizerRef, resolve_tokenizer

__all__ = ["TokenJob", "TokenSpec", "TokenPart", "tokenize_partition", "write_token_shard",
           "token_schema"]

logger = logging.getLogger(__name__)

def token_schema(opts: TokenOptions):
    """The Arrow schema of token records (``list<int32>`` ids)."""
    import pyarrow as pa
    fields = [("input_ids", pa.list_(pa.int32()))]
    if opts.seq_len and opts.doc_starts:
        fields.append(("doc_starts", pa.list_(pa.int32())))
    if opts.seq_len and opts.last == "pad":
        fields.append(("pad", pa.int32()))
    return pa.schema(fields)


@dataclass(frozen=True)
class TokenSpec:
    """What every token task needs (it travels in the graph)."""

    write: WriteSpec
    tokenizer: TokenizerRef
    text_field: str = "text"
    seq_len: int | None = None
    doc_starts: bool = False
    pad_field: bool = False  # every sequence says how many pad tokens end it

    @property
    def out(self) -> OutputDir:
        return self.write.out

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id


@dataclass
class TokenPart:
    """What a tokenize task reports: counts and errors, never tokens."""

    index: int
    key: str | None = None
    tokens: int = 0
    documents: int = 0
    empty: int = 0
    errors: list = field(default_factory=list)  # [SourceError]
    seconds: float = 0.0
    fatal: tuple | None = None
    sources: int = 0  # set by run() for its progress hook; not saved
    shards: tuple = ()  # (progress hooks count shards; a partition writes none)

    @property
    def records(self) -> int:
        return self.documents

    @property
    def failed_sources(self) -> int:
        return sum(1 for e in self.errors if e.line is None)

    def to_json(self) -> dict:
        return {"index": self.index, "key": self.key, "tokens": self.tokens, "documents": self.documents,
                "empty": self.empty, "errors": [e.to_dict() for e in self.errors], "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> TokenPart:
        return cls(d["index"], d["key"], d["tokens"], d["documents"], d["empty"],
                   [SourceError(**e) for e in d["errors"]], d.get("seconds", 0.0))


def _names(index: int) -> tuple[str, str, str]:
    stem = f"{WORK}/t{index:05d}"
    return f"{stem}.ids", f"{stem}.docs", f"{stem}.json"


def _load_part(out: OutputDir, index: int, key: str | None) -> TokenPart | None:
    ids, docs, marker = _names(index)
    try:
        part = TokenPart.from_json(json.loads(out.read_bytes(marker)))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if part.index != index or part.key != key:
        return None
    try:
        sizes_ok = out.size(ids) == part.tokens * IDS.itemsize and out.size(docs) == part.documents * DOCS.itemsize
    except FileNotFoundError:
        return None
    return part if sizes_ok else None


# -- tokenize: one task a partition ---------------------------------------------------


def tokenize_partition(records, index: int, key: str | None, spec: TokenSpec) -> TokenPart:
    """The tokenize task of partition ``index`` (module-level, so it pickles by reference):
    :func:`~dask_prep.tokens.encode.encode_partition`, saved in the work folder.
    A marker with today's ``key`` means it is done already.
    """
    done = _load_part(spec.out, index, key)
    if done is not None:
        return done
    t0 = time.perf_counter()
    part, ids, lens = encode_partition(records, TokenPart(index, key), spec.tokenizer, spec.text_field)
    if part.fatal:
        return part
    ids_name, docs_name, marker = _names(index)
    spec.out.write_atomic(ids_name, ids.astype(IDS, copy=False).tobytes())
    spec.out.write_atomic(docs_name, lens.astype(DOCS, copy=False).tobytes())
    part.seconds = round(time.perf_counter() - t0, 3)
    spec.out.write_json(marker, part.to_json())
    return part


# -- cut: one task a shard ---------------------------------------------------------------


def _read(out: OutputDir, name: str, dtype: np.dtype, start: int, stop: int) -> np.ndarray:
    if stop <= start:
        return np.empty(0, dtype)
    data = out.fs.cat_file(out.path(name), start=start * dtype.itemsize, end=stop * dtype.itemsize)
    return np.frombuffer(data, dtype)


def _lengths(out: OutputDir, index: int) -> np.ndarray:
    name = _names(index)[1]
    return np.frombuffer(out.read_bytes(name), DOCS)


def _packed_records(spec: TokenSpec, plan: ShardPlan):
    L = spec.seq_len
    ids = np.concatenate([_read(spec.out, _names(i)[0], IDS, a, b) for i, a, b, _ in plan.slices]
                         + [np.full(plan.pad, spec.pad_id, IDS)])
    seqs = ids.reshape(-1, L)
    starts = None
    if spec.doc_starts:
        pos = np.concatenate([doc_starts_in(_lengths(spec.out, i), a, b) + at
                              for i, a, b, at in plan.slices] + [np.empty(0, np.int64)])
        cuts = np.searchsorted(pos, np.arange(1, len(seqs)) * L)
        starts = [(p - s * L).tolist() for s, p in enumerate(np.split(pos, cuts))]
    last = len(seqs) - 1
    for s in range(len(seqs)):
        rec = {"input_ids": seqs[s].tolist()}
        if starts is not None:
            rec["doc_starts"] = starts[s]
        if spec.pad_field:
            rec["pad"] = plan.pad if s == last else 0
        yield rec


def _document_records(spec: TokenSpec, plan: ShardPlan):
    for i, first, stop, _ in plan.slices:
        lens = _lengths(spec.out, i)
        ends = np.cumsum(lens)
        a = int(ends[first - 1]) if first else 0
        ids = _read(spec.out, _names(i)[0], IDS, a, int(ends[stop - 1]))
        for doc in np.split(ids, ends[first:stop - 1] - a):
            yield {"input_ids": doc.tolist()}


def write_token_shard(spec: TokenSpec, plan: ShardPlan) -> tuple[int, ShardInfo, int]:
    """Write shard ``plan.k`` to the work folder; ``(k, its info, its tokens)``."""
    marker = f"{WORK}/s{plan.k:05d}.json"
    try:
        saved = json.loads(spec.out.read_bytes(marker))
        info = ShardInfo.from_json(saved["info"])
        if saved["plan"] == plan.to_json() and all(spec.out.exists(f) for f in info.files()):
            return plan.k, info, saved["tokens"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    fmt = spec.write.new_format()
    records = _packed_records(spec, plan) if spec.seq_len else _document_records(spec, plan)
    batches, chunk, tokens = [], [], 0
    with fewer_collections():
        for rec in records:
            tokens += len(rec["input_ids"])
            chunk.append(rec)
            if len(chunk) == CHUNK:
                batches.append(fmt.batch(chunk))
                chunk = []
        if chunk or not batches:
            batches.append(fmt.batch(chunk))
        info = write_shard(spec.out, f"{WORK}/s{plan.k:05d}{fmt.suffix}", fmt, fmt.concat(batches))
    spec.out.write_json(marker, {"plan": plan.to_json(), "info": asdict(info), "tokens": tokens})
    return plan.k, info, tokens


# -- the job ---------------------------------------------------------------------------


def _with_token_schema(write: WriteOptions, tokens: TokenOptions, ref: TokenizerRef) -> WriteOptions:
    cls = format_class(write.format)
    if write.schema is None and cls.has_schema:
        write = replace(write, schema=token_schema(tokens))
    fopts = getattr(write, "format_options", None)
    if fopts is not None and "vocab_size" not in fopts and _accepts(cls, "vocab_size"):
        write = replace(write, format_options={**fopts, "vocab_size": ref.vocab_size})
    return write


def _accepts(cls, name: str) -> bool:
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


class TokenJob(WriteJob):
    """Tokenize a bag's documents and write them, packed or not, as exact shards."""

    def __init__(self, bag, out: OutputDir, opts: WriteOptions, tokens: TokenOptions, **kwargs):
        self.token_opts = tokens
        self.ref = resolve_tokenizer(tokens.tokenizer, bos=tokens.bos, eos=tokens.eos)
        super().__init__(bag, out, _with_token_schema(opts, tokens, self.ref), **kwargs)
        ident = {"tokenizer": self.ref.sha256, "kind": self.ref.kind, "bos": self.ref.bos_id,
                 "eos": self.ref.eos_id, "text_field": tokens.text_field}
        self.keys = [_sha256([k, ident]) for k in self.keys]
        self.command = _sha256({"write": self.command, "tokens": ident, "seq_len": tokens.seq_len,
                                "last": tokens.last, "doc_starts": tokens.doc_starts, "layout": VERSION})
        self.fingerprint = _sha256([self.command, self.keys])
        self.tspec = TokenSpec(self.spec, self.ref, tokens.text_field, tokens.seq_len,
                               bool(tokens.doc_starts and tokens.seq_len),
                               bool(tokens.seq_len and tokens.last == "pad"))
        self.planner = Planner(seq_len=tokens.seq_len, shard_size=self.opts.shard_size)
        self.next = 0
        self.cut: dict[int, tuple[ShardInfo, int]] = {}
        self.planned: dict[int, ShardPlan] = {}  # every shard planned, cut or not

    # -- resume and run ------------------------------------------------------------

    def _resume(self) -> None:
        found = (_load_part(self.out, i, self.keys[i]) for i in range(self.n))
        self.done = {p.index: p for p in found if p is not None}
        if self.done:
            logger.info("resuming: %d of %d partitions were already tokenized", len(self.done), self.n)
        self.failed = sum(p.failed_sources for p in self.done.values())
        self._check_errors()

    def _ready(self) -> list:
        """Cut tasks for the shards the partitions done so far (in order) complete."""
        plans = []
        while self.next in self.done:
            part = self.done[self.next]
            plans += self.planner.add(part.tokens, part.documents)
            self.next += 1
        if self.next == self.n:
            plans += self.planner.finish(self.token_opts.last)
            self.next += 1
        self.planned.update((p.k, p) for p in plans)
        return self._cut(plans)

    def _cut(self, plans) -> list:
        return [dask.delayed(write_token_shard, pure=False)(self.tspec, p) for p in plans]

    def _convert(self) -> None:
        todo = [i for i in range(self.n) if i not in self.done]
        if not self.attempt:  # (on a later attempt, done in this run)
            self.resumed = self.n - len(todo)
        name = f"dask-prep-write-tokens-{self.fingerprint[:32]}-{self.attempt}"  # (a killed worker names it)
        tasks = fused_tasks(self.bag, tokenize_partition, name,
                            [(i, self.keys[i]) for i in range(self.n)], self.tspec)
        # (on a later attempt, the shards planned before whose cut did not finish)
        again = self._cut(p for k, p in sorted(self.planned.items()) if k not in self.cut)
        execute(again + self._ready() + [tasks[i] for i in todo], self._finished)

    def _use(self, bag) -> None:
        super()._use(bag)
        self.tspec = replace(self.tspec, write=self.spec)

    def _finished(self, result) -> list:
        if isinstance(result, tuple):  # a shard was cut
            k, info, tokens = result
            self.cut[k] = info, tokens
            return []
        if result.fatal:
            raise ConversionError(result.fatal[1])
        self.done[result.index] = result
        self.failed += result.failed_sources
        self._check_errors()
        if self.on_partition:
            self.on_partition(result, len(self.done), self.n)
        return self._ready()

    def _redo_conflicts(self) -> None:
        """Token records all have one schema: nothing clashes."""

    # -- commit ---------------------------------------------------------------------

    def _tokens_info(self, infos: list[ShardInfo], plans_tokens: list[int]) -> dict:
        parts, t = [self.done[i] for i in range(self.n)], self.token_opts
        total = sum(p.tokens for p in parts)
        return {"total_tokens": total, "tokens_per_shard": plans_tokens,
                "documents": sum(p.documents for p in parts), "empty_documents": sum(p.empty for p in parts),
                "seq_len": t.seq_len, "padding": sum(plans_tokens) - total + self.planner.dropped,
                "dropped_tokens": self.planner.dropped, "last": t.last if t.seq_len else None,
                "doc_starts": bool(t.doc_starts and t.seq_len), "text_field": t.text_field,
                "bos_id": self.ref.bos_id, "eos_id": self.ref.eos_id, "vocab_size": self.ref.vocab_size,
                "dtype": "int32", "tokenizer": self.ref.info(), "tokenizer_sha256": self.ref.sha256}

    def _commit(self, t_commit: float) -> Manifest:
        parts = [self.done[i] for i in range(self.n)]
        if not self.opts.allow_empty and not any(p.documents for p in parts):
            failed = sum(p.failed_sources for p in parts)
            raise EmptyDatasetError(
                f"no documents: the sources gave none ({failed:,} failed); nothing was written to "
                f"{self.out.url} (pass --allow-empty to write an empty dataset)")
        fmt = self.spec.new_format()
        if len(self.cut) != self.planner.k:
            raise RuntimeError(f"{self.planner.k - len(self.cut)} shard(s) were not written")
        infos = [self.cut[k][0] for k in range(self.planner.k)]
        per_shard = [self.cut[k][1] for k in range(self.planner.k)]
        return self._write_dataset(fmt, infos, parts, self.spec.schema, t_commit,
                                   tokens=self._tokens_info(infos, per_shard))
