"""Several trainer ranks streaming from one cluster: disjoint, deterministic,
equal with drop_last, and a rank killed and restarted from its state."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import dask_prep as dp
from dask_prep.ingest.converters import sentences
from helpers import dask_processes, make_corpus, serial_records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    return root, make_corpus(root, n=12, sentences=10)


def vocab_of(paths):
    words = sorted({w for r in serial_records(paths, sentences) for w in r["words"]})
    return dp.Vocab(["<pad>", "<unk>", *words])


def take(root, vocab, **kw):
    conv = dp.with_token_ids("sentences", vocab)
    with dp.stream(root, converter=conv, batch_size=5, ordered=True, partition_size=8192, **kw) as st:
        return list(st)


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x["token_ids"], y["token_ids"]) for x, y in zip(a, b))


@pytest.mark.slow  # a real CLI run or several: seconds
def test_ranks_take_every_world_size_th_batch_of_the_whole_stream(client, corpus):
    root, paths = corpus
    vocab = vocab_of(paths)
    whole = take(root, vocab)
    for w in (2, 3):
        parts = [take(root, vocab, rank=r, world_size=w) for r in range(w)]
        assert all(same(parts[r], whole[r::w]) for r in range(w)), w
        equal = [take(root, vocab, rank=r, world_size=w, drop_last=True) for r in range(w)]
        full = len(whole) - (len(whole[-1]["lengths"]) < 5)
        assert {len(p) for p in equal} == {full // w}, "drop_last: every rank the same number"
    with pytest.raises(ValueError, match="ordered=True"):
        dp.stream(root, batch_size=5, rank=0, world_size=2)


TRAINER = textwrap.dedent('''
    import json, os, sys, time
    import dask_prep as dp
    rank, world, scheduler, root, vocab, state_file, log = sys.argv[1:8]
    slow = float(os.environ.get("SLOW", "0"))
    conv = dp.with_token_ids("sentences", dp.Vocab.load(vocab))
    st = dp.stream(root, converter=conv, batch_size=5, ordered=True, partition_size=8192,
                   rank=int(rank), world_size=int(world), scheduler=scheduler, max_in_flight=2)
    if os.path.exists(state_file):
        st.load_state_dict(json.load(open(state_file)))
    with st:
        for batch in st:
            rows = [r[:n].tolist() for r, n in zip(batch["token_ids"], batch["lengths"])]
            with open(log, "a") as f:  # the training step ...
                f.write(json.dumps(rows) + "\\n")
            tmp = state_file + ".tmp"  # ... then the commit of the stream's state
            json.dump(st.state_dict(), open(tmp, "w"))
            os.replace(tmp, state_file)
            time.sleep(slow)
''')


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_trainer_processes_on_one_cluster_and_a_rank_killed_and_restarted(corpus, tmp_path):
    root, paths = corpus
    vocab = vocab_of(paths)
    vocab.save(tmp_path / "vocab.json")
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    want = sorted(vocab.ids(r["words"]).tolist() for r in serial_records(paths, sentences))
    with dask_processes(tmp_path) as address:
        def trainer(rank, slow="0"):
            return subprocess.Popen(
                [sys.executable, str(script), str(rank), "2", address, str(root), str(tmp_path / "vocab.json"),
                 str(tmp_path / f"state{rank}.json"), str(tmp_path / f"log{rank}.jsonl")],
                env={**__import__("os").environ, "SLOW": slow}, stderr=subprocess.PIPE, text=True)
        fast, slow = trainer(0), trainer(1, slow="0.3")
        log1 = tmp_path / "log1.jsonl"
        deadline = time.time() + 120
        while not (log1.exists() and len(log1.read_text().splitlines()) >= 3):
            assert time.time() < deadline and slow.poll() is None, slow.stderr.read() if slow.poll() else ""
            time.sleep(0.05)
        slow.send_signal(signal.SIGKILL)
        slow.wait()
        assert fast.wait(120) == 0, fast.stderr.read()
        again = trainer(1)
        assert again.wait(120) == 0, again.stderr.read()
    lines = [json.loads(line) for r in (0, 1) for line in (tmp_path / f"log{r}.jsonl").read_text().splitlines()]
    # a batch logged but killed before its state was committed is seen twice (at-least-once
    # between the step and the commit); nothing is ever lost
    from collections import Counter
    got = Counter(json.dumps(row) for batch in lines for row in batch)
    expected = Counter(json.dumps(row) for row in want)
    assert not expected - got, "rows lost"
    extra = got - expected
    batches1 = [Counter(json.dumps(row) for row in batch) for batch in
                map(json.loads, (tmp_path / "log1.jsonl").read_text().splitlines())]
    assert not extra or extra in batches1, extra


@pytest.mark.parametrize("w1,w2", [(2, 3), (3, 1), (1, 2)])
def test_a_stream_resumes_at_another_world_size_with_every_batch_once(client, corpus, w1, w2):
    root, paths = corpus
    vocab = vocab_of(paths)
    conv = dp.with_token_ids("sentences", vocab)

    def make(rank, world):
        return dp.stream(root, converter=conv, batch_size=5, ordered=True, partition_size=8192,
                         rank=rank, world_size=world)
    whole = take(root, vocab)
    k = len(whole) // (2 * w1)  # every rank consumed k batches (synchronous training)
    before, states = [], []
    for r in range(w1):
        with make(r, w1) as st:
            before += [next(st) for _ in range(k)]
            states.append(json.loads(json.dumps(st.state_dict())))
    after = []
    for r in range(w2):
        with make(r, w2) as st:
            st.load_state_dict(states[-1 - r % w1])  # any rank's state will do
            after += list(st)
    def key(b):
        return b["token_ids"].tobytes() + b["lengths"].tobytes()
    assert sorted(map(key, before + after)) == sorted(map(key, whole)), "every batch exactly once"
