"""Execution: a real `dask scheduler` + `dask worker` cluster, a notebook's client,
callables from the user's own code, and unreachable schedulers."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dask_prep as dp
from helpers import dask_prep_cli, dask_processes, make_corpus

pytestmark = pytest.mark.slow  # real dask scheduler/worker processes, TLS


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    with dask_processes(tmp_path_factory.mktemp("cluster")) as address:
        yield address


def test_cli_on_real_cluster_is_byte_identical_to_local(real_cluster, tmp_path):
    make_corpus(tmp_path / "in", n=30)
    common = ["run", tmp_path / "in", "--converter", "sentences", "--shard-size", "250",
              "--partition-size", "40000", "-q"]
    remote = subprocess.run(dask_prep_cli() + list(map(str, common + ["-o", tmp_path / "remote",
                            "--scheduler", real_cluster])), capture_output=True, text=True, timeout=240)
    assert remote.returncode == 0, remote.stderr
    assert "2 worker(s)" in remote.stdout
    dp.run([tmp_path / "in"], tmp_path / "local", converter="sentences", shard_size=250,
           partition_size=40000, workers=1)
    names = sorted(p.name for p in (tmp_path / "local").glob("shard-*"))
    assert names and names == sorted(p.name for p in (tmp_path / "remote").glob("shard-*"))
    for n in names:
        assert (tmp_path / "local" / n).read_bytes() == (tmp_path / "remote" / n).read_bytes()


def test_closure_from_user_code_runs_on_cluster_workers(real_cluster, tmp_path):
    make_corpus(tmp_path / "in", n=6)
    suffix = "!"

    def shout(path):  # a closure in a test module the workers cannot import
        with open(path, "rb") as f:
            head = f.read(5)
        return [{"name": os.path.basename(path), "head": head.decode("latin-1") + suffix}]

    res = dp.run([tmp_path / "in"], tmp_path / "out", converter=shout, scheduler=real_cluster)
    assert res.records == 6 and res.errors == 0 and res.workers == 2
    assert all(r["head"].endswith("!") for r in dp.open(tmp_path / "out"))


def test_notebook_client_is_used_when_present(client, tmp_path):
    make_corpus(tmp_path / "in", n=4)
    res = dp.run([tmp_path / "in"], tmp_path / "out", converter="text")
    assert res.workers == 2 and res.dashboard_link == client.dashboard_link
    assert res.records == 4


def test_unreachable_scheduler_fails_fast_with_a_clear_error(tmp_path):
    make_corpus(tmp_path / "in", n=2)
    t0 = time.time()
    env = {**os.environ, "DASK_DASK_PREP__CONNECT_TIMEOUT": "1s"}  # dask config, as users set it
    r = subprocess.run(dask_prep_cli() + ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                                          "--scheduler", "tcp://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.stderr
    assert "within 1s" in r.stderr
    assert time.time() - t0 < 60


def test_dashboard_answers_during_a_run_and_report_is_written(tmp_path):
    import urllib.request
    make_corpus(tmp_path / "in", n=10)
    seen = {}

    def link(session, sources, npartitions):
        seen["base"] = session.dashboard_link.rsplit("/", 1)[0]

    def fetch(result, done, total):  # while partitions are still being converted
        if done == 1:
            seen["health"] = urllib.request.urlopen(seen["base"] + "/health", timeout=10).read().decode()
            seen["status"] = urllib.request.urlopen(seen["base"] + "/status", timeout=10).read().decode()
            seen["remaining"] = total - done

    dp.run([tmp_path / "in"], tmp_path / "out", workers=1, partition_size=10_000, on_start=link,
           on_partition=fetch, report=tmp_path / "report.html")
    assert seen["base"].startswith("http://127.0.0.1:") and seen["remaining"] > 0
    assert seen["health"] == "ok" and "Dask" in seen["status"] and "<html" in seen["status"].lower()
    report = (tmp_path / "report.html").read_text()
    assert "Dask Performance Report" in report and len(report) > 10_000


def test_memory_limit_applies_to_local_workers_only(tmp_path):
    make_corpus(tmp_path / "in", n=3)
    limits = []

    def on_start(session, sources, npartitions):
        limits.extend(w["memory_limit"] for w in session.client.scheduler_info()["workers"].values())

    res = dp.run([tmp_path / "in"], tmp_path / "out", workers=1, memory_limit="300MB", on_start=on_start)
    assert res.records == 3 and limits == [300_000_000]
    with pytest.raises(ValueError, match="memory_limit applies to the local workers"):
        dp.run([tmp_path / "in"], tmp_path / "o2", scheduler="tcp://127.0.0.1:9", memory_limit="1GB")
    r = subprocess.run(dask_prep_cli() + ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o3"),
                                          "--scheduler", "tcp://127.0.0.1:9", "--memory-limit", "1GB"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not with --scheduler" in r.stderr


SESSIONS_SCRIPT = """
import json, os, sys, time
from pathlib import Path

def worker_view():
    # /proc/self/environ is the environment the process image started with:
    # what libraries read at start (OMP_NUM_THREADS, MALLOC_TRIM_THRESHOLD_)
    started = Path("/proc/self/environ").read_bytes().split(b"\\0")
    import dask
    return (os.environ.get("DASK_PREP_TEST_VAR"),
            b"OMP_NUM_THREADS=1" in started and not any(v.startswith(b"MALLOC_TRIM") for v in started),
            hash("dask-prep"), dask.config.get("distributed.worker.profile.interval"))

def busy(seconds):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        sum(range(1000))

if __name__ == "__main__":
    from dask_prep.runtime.cluster import dask_session
    views = []
    for value in ("first", "second"):
        os.environ["DASK_PREP_TEST_VAR"] = value
        with dask_session(workers=2) as session:
            views.append(sorted(session.client.run(worker_view).values()))
            session.client.submit(busy, 1.0).result()
            profile = session.client.profile()  # sampled less often, but sampled
    print(json.dumps({"views": views, "profile_count": profile["count"]}))
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_local_workers_see_each_sessions_environment(tmp_path):
    """Workers are forked from a server started once per process; they still get
    the environment of the session that starts them, what the nanny sets before
    starting a process (but the trim threshold), the string hashes of the
    nanny's spawned workers, and dask-prep's coarser timers (the dashboard's
    profile still fills). In a fresh interpreter: this one's fork server may be
    running already, and any earlier Nanny leaves MALLOC_TRIM_THRESHOLD_ in
    ``os.environ``."""
    script = tmp_path / "sessions.py"
    script.write_text(SESSIONS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "DASK_"))}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    views = got["views"]
    assert got["profile_count"] >= 3
    assert {v[3] for vs in views for v in vs} == {"100ms"}
    assert [{v[0] for v in vs} for vs in views] == [{"first"}, {"second"}]
    assert all(v[1] for vs in views for v in vs)
    spawned = subprocess.run([sys.executable, "-c", "print(hash('dask-prep'))"], capture_output=True,
                             text=True, env={**env, "PYTHONHASHSEED": "6640"}, check=True)
    assert {v[2] for vs in views for v in vs} == {int(spawned.stdout)}


def make_certs(d: Path) -> dict:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl)."""
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=dask-prep test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "cert.pem", "-days", "1", "-extfile", "ext.cnf")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


@pytest.mark.skipif(not __import__("shutil").which("openssl"), reason="needs openssl")
def test_tls_only_scheduler(tmp_path):
    certs = make_certs(tmp_path)
    tls = ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    make_corpus(tmp_path / "in", n=6)
    with dask_processes(tmp_path, nworkers=1, tls=tuple(tls)) as address:
        assert address.startswith("tls://")
        base = dask_prep_cli() + ["run", str(tmp_path / "in"), "--scheduler", address, "-q"]
        plain = subprocess.run(base + ["-o", str(tmp_path / "o1")], capture_output=True, text=True,
                               timeout=120)
        assert plain.returncode == 1 and "speaks TLS: pass --tls-ca-file" in plain.stderr
        secure = subprocess.run(base + ["-o", str(tmp_path / "o2"), *tls], capture_output=True,
                                text=True, timeout=120)
        assert secure.returncode == 0, secure.stderr
        assert dp.open(tmp_path / "o2").manifest["total_records"] == 6


def test_cli_file_converter_on_real_cluster(real_cluster, tmp_path):
    conv = tmp_path / "mine" / "conv.py"  # workers run elsewhere and cannot import this file
    conv.parent.mkdir()
    conv.write_text("def sizes(path):\n    return [{'bytes': len(open(path, 'rb').read())}]\n")
    make_corpus(tmp_path / "in", n=5)
    r = subprocess.run(dask_prep_cli() + ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                          "--converter", f"{conv}:sizes", "--scheduler", real_cluster,
                                          "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(x["bytes"] for x in dp.open(tmp_path / "out")) == sorted(
        p.stat().st_size for p in (tmp_path / "in").rglob("*.txt*"))


LEFT_ALONE_SCRIPT = """
import copy, json, multiprocessing, os, sys
from multiprocessing import forkserver

def state():
    import dask
    # (__DASK_PARENT_PID is Dask's own marker, set when it first starts a nanny)
    return {"environ": {k: v for k, v in os.environ.items() if not k.startswith("__DASK_")},
            "start_method": multiprocessing.get_start_method(allow_none=True),
            "config": json.dumps(dask.config.config, sort_keys=True, default=repr),
            "preload": list(getattr(forkserver._forkserver, "_preload_modules", ()))}

def worker_environ():
    import fsspec, os
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PYTHONHASHSEED")} | {"fsspec": dict(fsspec.config.conf)}

if __name__ == "__main__":
    # distributed and dask_prep.config add their defaults to dask config on import, as
    # Dask's downstream libraries do; a run must change nothing after that
    import distributed, dask_prep as dp, dask_prep.config
    src, out = sys.argv[1], sys.argv[2]
    before = state()
    seen = []
    hook = lambda session, sources, n: seen.append(session.client.run(worker_environ))
    for k in range(2):
        dp.run([src], f"{out}{k}", workers=1, on_start=hook)
        after = state()
        for key in before:
            assert after[key] == before[key], (key, before[key], after[key])
    print(json.dumps(seen))
"""


@pytest.mark.slow  # two embedded clusters in a fresh interpreter
def test_run_leaves_the_callers_process_as_it_was(tmp_path):
    """The workers get OMP_NUM_THREADS=1 and a fixed PYTHONHASHSEED; the caller's
    os.environ, multiprocessing (start method, the fork server's preloads) and
    dask config are as they were after each run, and no worker keeps fsspec
    config. (The fork server keeps running for the next run, by design.)"""
    make_corpus(tmp_path / "in", n=4)
    script = tmp_path / "left_alone.py"
    script.write_text(LEFT_ALONE_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DASK_", "OMP_", "MKL_", "OPENBLAS_", "MALLOC_", "PYTHONHASHSEED"))}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for workers in seen:
        for view in workers.values():
            assert view == {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "6640", "fsspec": {}}


@pytest.mark.slow  # an embedded cluster, and clients that must time out
def test_the_embedded_cluster_admits_only_its_owner(tmp_path):
    """The embedded scheduler speaks TLS with credentials made for this run: a
    client without them (plain TCP, TLS without a certificate or with another
    CA's) is refused
    while the run is live; with them it connects. The dashboard stays plain
    HTTP on 127.0.0.1."""
    import urllib.request

    from distributed import Client
    from distributed.security import Security
    make_corpus(tmp_path / "in", n=4)
    seen = {}

    def on_start(session, sources, npartitions):
        addr = session.client.scheduler.address
        seen["address"], seen["link"] = addr, session.dashboard_link
        stranger = Security.temporary()  # TLS, but certificates of another CA
        for attempt, security in ((addr.replace("tls://", "tcp://"), None), (addr, None),
                                  (addr, stranger)):
            try:
                with Client(attempt, timeout=2, security=security):
                    seen.setdefault("admitted", []).append(attempt)
            except Exception as exc:  # refused: TimeoutError, OSError, or no TLS context
                seen.setdefault("refused", []).append((attempt, type(exc).__name__))
        with Client(addr, security=session.client.security, timeout=10) as owner:
            seen["owner"] = owner.submit(sum, [1, 2]).result()
        with urllib.request.urlopen(session.dashboard_link.replace("/status", "/health"), timeout=5) as r:
            seen["health"] = r.read().decode()

    t0 = time.perf_counter()
    result = dp.run([tmp_path / "in"], tmp_path / "out", workers=1, on_start=on_start)
    assert result.records > 0
    assert seen["address"].startswith("tls://127.0.0.1:")
    assert "admitted" not in seen and len(seen["refused"]) == 3, seen
    assert seen["owner"] == 3 and seen["health"] == "ok"
    assert seen["link"].startswith("http://127.0.0.1:")
    assert time.perf_counter() - t0 < 60


MARK_CONVERTER = "import os\n\ndef mark(path):\n    return [{'mark': os.environ.get('DASK_PREP_TEST_MARK', '')}]\n"


def _run_marked(tmp_path: Path, out: str, *args, env: dict) -> subprocess.CompletedProcess:
    """A CLI run whose converter records the workers' DASK_PREP_TEST_MARK: local
    workers inherit the command's ("cli"), the real cluster's workers do not."""
    conv = tmp_path / "mark conv.py"
    conv.write_text(MARK_CONVERTER)
    if not (tmp_path / "in").exists():
        make_corpus(tmp_path / "in", n=4)
    base = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.run(dask_prep_cli() + ["run", str(tmp_path / "in"), "-o", str(tmp_path / out),
                                             "--converter", f"{conv}:mark", "-q", *map(str, args)],
                          capture_output=True, text=True, timeout=240,
                          env={**base, "DASK_PREP_TEST_MARK": "cli", **env})


def _marks(out: Path) -> set:
    return {r["mark"] for r in dp.open(out)}


def test_dask_scheduler_address_is_honoured_and_workers_win(real_cluster, tmp_path):
    r = _run_marked(tmp_path, "remote", env={"DASK_SCHEDULER_ADDRESS": real_cluster})
    assert r.returncode == 0, r.stderr
    assert _marks(tmp_path / "remote") == {""}  # converted by the real cluster's workers
    r = _run_marked(tmp_path, "local", "--workers", "1", env={"DASK_SCHEDULER_ADDRESS": real_cluster})
    assert r.returncode == 0, r.stderr
    assert _marks(tmp_path / "local") == {"cli"} and "on 1 worker(s)" in r.stdout


def test_scheduler_file_as_dask_scheduler_writes_it(tmp_path):
    shared = tmp_path / "shared fs ü"
    shared.mkdir()
    with dask_processes(shared, nworkers=1):
        sfile = shared / "scheduler.json"
        r = _run_marked(tmp_path, "out", "--scheduler-file", sfile, env={})
        assert r.returncode == 0, r.stderr
        assert _marks(tmp_path / "out") == {""} and "on 1 worker(s)" in r.stdout
        res = dp.run([tmp_path / "in"], tmp_path / "py", scheduler_file=sfile)
        assert res.workers == 1 and res.records == 4
    with pytest.raises(ValueError, match="scheduler address or a number of workers"):
        dp.ClusterOptions(scheduler_file=sfile, workers=2)


def test_dask_config_scheduler_address_in_python(real_cluster, tmp_path):
    import dask
    make_corpus(tmp_path / "in", n=3)
    with dask.config.set({"scheduler-address": real_cluster}):
        seen = []
        res = dp.run([tmp_path / "in"], tmp_path / "out",
                     on_start=lambda session, sources, n: seen.append(session.client.scheduler.address))
    assert res.records == 3 and seen == [real_cluster]
