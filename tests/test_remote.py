"""Inputs and output on s3:// through fsspec (s3fs), against a real S3-compatible
server (moto) on loopback; storage_options travel to the workers."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import dask_prep as dp
from helpers import make_corpus

pytestmark = pytest.mark.slow  # a real S3-compatible server

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "eu-west-1"}}
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_s3_round_trip_matches_local_run(s3, client, tmp_path):
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    fs.mkdir("corpus")
    fs.mkdir("out")
    paths = make_corpus(tmp_path / "in", n=24)
    fs.put(str(tmp_path / "in") + "/", "corpus/docs/", recursive=True)
    opts = dict(converter="sentences", shard_size=300, partition_size=30_000)
    t0 = time.perf_counter()
    remote = dp.run(["s3://corpus/docs/"], "s3://out/ds", storage_options=s3, client=client, **opts)
    elapsed = time.perf_counter() - t0
    local = dp.run([tmp_path / "in"], tmp_path / "local", client=client, **opts)
    assert remote.sources == len(paths) and remote.records == local.records > 0
    ds = dp.open("s3://out/ds", storage_options=s3)
    assert len(ds) == remote.records and dp.verify("s3://out/ds", storage_options=s3).ok
    keys = sorted(k.rsplit("/", 1)[1] for k in fs.ls("out/ds", refresh=True))
    assert keys == [".errors.jsonl", ".manifest.json", ".sources.jsonl"] + [f"shard-{i:05d}.parquet" for i in range(len(ds.shards))]
    for s in ds.shards:  # the same bytes as the local run
        assert fs.cat_file(f"out/ds/{s['file']}") == (tmp_path / "local" / s["file"]).read_bytes()
    assert ds.to_dataframe().compute().shape[0] == remote.records
    m = json.loads(fs.cat_file("out/ds/.manifest.json"))
    nbytes = sum(s["bytes"] for s in m["shards"])
    print(f"S3 round trip: {remote.records} records, {nbytes} bytes in {len(m['shards'])} shards, "
          f"{elapsed:.2f} s (local run {local.elapsed:.2f} s)")


def test_s3_output_refuses_foreign_files(s3, tmp_path):
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    fs.mkdir("busy")
    fs.pipe_file("busy/ds/notes.txt", b"not ours")
    make_corpus(tmp_path / "in", n=2)
    with pytest.raises(dp.OutputExistsError, match="notes.txt"):
        dp.run([tmp_path / "in"], "s3://busy/ds", storage_options=s3, workers=1)


def test_s3_keys_with_colons_hashes_and_glob_characters_are_those_keys(s3, client, tmp_path):
    """In a URL, "::" is a chain only before another protocol: a key named
    ``Algorithm::Diff.3pm.gz`` (or with ``#``, ``?``, ``[``) is that key."""
    import gzip
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    fs.mkdir("odd")
    names = ["Algorithm::Diff.3pm.gz", "a#b.txt", "q?x.txt", "br[1].txt"]
    for i, n in enumerate(names):
        body = f"Body {i}.".encode()
        fs.pipe_file(f"odd/man/{n}", gzip.compress(body) if n.endswith(".gz") else body)
    fs.pipe_file("odd/man/br1.txt", b"decoy")
    given = [f"s3://odd/man/{n}" for n in names]
    result = dp.run(given, tmp_path / "out", storage_options=s3, client=client, converter="text")
    assert result.missing == [] and result.errors == 0
    assert sorted(r["text"] for r in dp.open(tmp_path / "out")) == [f"Body {i}." for i in range(4)]


def test_credentials_stay_with_their_run_on_a_shared_cluster(s3, client, tmp_path):
    """storage_options travel with each run's tasks, never into the workers'
    global fsspec config: a later run on the same workers without credentials
    gets none (and fails on every source), whatever the first run passed."""
    import dataclasses

    import fsspec
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    fs.mkdir("secret")
    for i in range(3):
        fs.pipe_file(f"secret/d{i}.txt", f"Secret {i}.".encode())
    first = dp.run(["s3://secret/"], tmp_path / "o1", storage_options=s3, client=client, converter="text")
    assert first.records == 3
    assert client.run(lambda: dict(fsspec.config.conf)) == {w: {} for w in client.scheduler_info()["workers"]}
    found = dp.discover("s3://secret/", storage_options=s3)  # listed with credentials, here
    no_keys = {k: v for k, v in s3.items() if k not in ("key", "secret")}
    env = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    assert all(os.environ.get(k) is None for k in env)  # no credentials from the environment
    from dask_prep.errors import TooManyErrorsError
    with pytest.raises(TooManyErrorsError, match="NoCredentialsError|credentials"):
        dp.run(dataclasses.replace(found, storage_options={}), tmp_path / "o2",
               storage_options=no_keys, client=client, converter="text")
