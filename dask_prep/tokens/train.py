"""Train a byte-level BPE tokenizer from a corpus, its text read on the cluster.

The workers read and convert the sources (decompression, decoding, the text
field) and keep a deterministic sample of the documents (``sample``: the
fraction kept, chosen by a sha256 of the seed, the file and the document's
text, so the same documents whatever the partitioning); the client
feeds Hugging Face's ``BpeTrainer`` one partition's text at a time, in
source order, with at most a few partitions in flight. Memory on the client
is those partitions plus the trainer's word counts. Byte-level: every byte is
in the alphabet, so no text maps to an unknown token. The result is a
``tokenizer.json`` that ``--tokenizer`` takes.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass

from ..ingest.convert import Conversion, to_bag
from ..options import ClusterOptions, ConvertOptions, split
from ..runtime.cluster import dask_session
from ..runtime.execute import current_client
from ..runtime.graph import fused_tasks
from ..write.partition import CHUNK

__all__ = ["train_tokenizer", "TrainResult", "sample_texts"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output: str
    vocab_size: int
    documents: int
    bytes: int
    seconds: float
    sha256: str

    def summary(self) -> str:
        from dask.utils import format_bytes, format_time
        return (f"{self.output}: byte-level BPE, {self.vocab_size:,} tokens, trained on "
                f"{self.documents:,} documents ({format_bytes(self.bytes)}) in {format_time(self.seconds)} "
                f"(sha256 {self.sha256[:16]})")


def _kept(seed: int, path: str | None, text: str, sample: float) -> bool:
    if sample >= 1:
        return True
    h = hashlib.sha256(f"{seed}\0{path}\0".encode() + text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") < sample * 2 ** 64


def sample_texts(records, index: int, text_field: str, sample: float, seed: int) -> list[str]:
    """The task of one partition: the text of the sampled documents, in order."""
    out = []
    pieces = records.pieces(CHUNK) if isinstance(records, Conversion) else [(None, [list(records)])]
    for piece, chunks in pieces:
        path, mine = getattr(piece, "path", None), []
        for chunk in chunks:
            if chunk is None:  # a failed source gives nothing
                mine = []
                break
            for rec in chunk:
                text = rec if isinstance(rec, str) else rec.get(text_field) if isinstance(rec, dict) else None
                if isinstance(text, str) and text and _kept(seed, path, text, sample):
                    mine.append(text)
        out.extend(mine)
    return out


def train_tokenizer(inputs, output, *, vocab_size: int, sample: float = 1.0, seed: int = 0,
                    min_frequency: int = 2, special_tokens=("<|endoftext|>",), text_field: str = "text",
                    convert: ConvertOptions | None = None, cluster: ClusterOptions | None = None,
                    **options) -> TrainResult:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``inputs``; save it to ``output``.

    ``sample`` is the fraction of documents used (chosen by ``seed``);
    ``special_tokens`` come first (``<|endoftext|>`` is the EOS that
    ``--tokenizer`` finds by itself). The same inputs, options and seed give
    the same file.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if not (isinstance(vocab_size, int) and vocab_size > 256 + len(special_tokens)):
        raise ValueError(f"vocab_size must be more than the 256 bytes and the special tokens, not {vocab_size!r}")
    if not 0 < sample <= 1:
        raise ValueError(f"sample must be a fraction within (0, 1], not {sample!r}")
    t0 = time.perf_counter()
    conv_opts, where = split(options, ConvertOptions, ClusterOptions,
                             given={k: v for k, v in {ConvertOptions: convert, ClusterOptions: cluster}.items()
                                    if v is not None})
    stats = {"documents": 0, "bytes": 0}
    with dask_session(where):
        bag = to_bag(inputs, options=conv_opts)
        tasks = fused_tasks(bag, sample_texts, "dask-prep-train-" + hashlib.sha256(
            f"{bag.name}{text_field}{sample}{seed}".encode()).hexdigest()[:32],
            [(i,) for i in range(bag.npartitions)], text_field, sample, seed)

        def texts():
            for part in _in_order(tasks):
                stats["documents"] += len(part)
                stats["bytes"] += sum(map(len, part))
                yield from part

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(special_tokens), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts(), trainer)
    if not stats["documents"]:
        from ..errors import EmptyDatasetError
        raise EmptyDatasetError(f"no text to train on in {inputs!r} (no sources, or none gave text); "
                                f"nothing was written to {os.fspath(output)}")
    data = tok.to_str(pretty=True).encode()
    output = os.fspath(output)
    tmp = f"{output}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, output)
    return TrainResult(output, tok.get_vocab_size(), stats["documents"], stats["bytes"],
                       time.perf_counter() - t0, hashlib.sha256(data).hexdigest())


def _in_order(tasks: list, ahead: int = 3):
    """Each task's result in order, with at most ``ahead`` more computing (bounded memory)."""
    client = current_client()
    if client is None:
        import dask
        for t in tasks:
            yield dask.compute(t)[0]
        return
    window, todo = deque(), iter(tasks)
    for t in todo:
        window.append(client.compute(t))
        if len(window) > ahead:
            break
    while window:
        fut = window.popleft()
        nxt = next(todo, None)
        if nxt is not None:
            window.append(client.compute(nxt))
        result = fut.result()
        fut.release()
        yield result
