"""Local paths are paths: only ``protocol://`` makes a URL. Names a real machine
holds (``Algorithm::Diff.3pm.gz``, spaces, ``#``, ``?``, glob characters, a
leading dash, a newline, unicode) are those files, on the command line, in an
``@list`` and through ``dask_prep.run``."""
import subprocess

import pytest

import dask_prep as dp
from dask_prep.paths import filesystem, is_url
from helpers import dask_prep_cli, env_without_client, write

#: every name here exists as a file; none may be read as a URL, a chain or a glob
NAMES = ["Algorithm::Diff.3pm.gz", "with space.txt", "ünïcödé ñame.txt", "-leading-dash.txt",
         "hash#tag.txt", "what?.txt", "star*.txt", "br[1].txt", "a[!x].txt", "q?x=1&y=2#frag.txt"]
LINE_SAFE = NAMES  # names an @list file can hold (one a line)
WITH_NEWLINE = "new\nline.txt"


@pytest.fixture
def named(tmp_path):
    d = tmp_path / "dir #1 :: [x]"
    for i, n in enumerate(NAMES + [WITH_NEWLINE]):
        write(d / n, f"Body of file number {i}.")
    # decoys a glob or a chain would pick up instead
    write(d / "Diff.3pm.gz", "decoy")
    write(d / "br1.txt", "decoy")
    write(d / "starX.txt", "decoy")
    write(d / "whatX.txt", "decoy")
    return d


def bodies(paths):
    return sorted(f"Body of file number {i}." for i, _ in enumerate(paths))


def test_only_a_protocol_prefix_makes_a_url():
    assert is_url("s3://bucket/key") and is_url("simplecache::s3://bucket/key")
    assert is_url("file:///tmp/x")
    for name in NAMES + ["man3/Algorithm::Diff.3pm.gz", "dir/s3://x", "C::D", "-x"]:
        assert not is_url(name), name
    # in a URL, "::" not followed by a protocol is part of the object's name
    fs, path = filesystem("memory://bucket/Algorithm::Diff.3pm.gz")
    assert path.endswith("bucket/Algorithm::Diff.3pm.gz")
    fs, path = filesystem("file:///tmp/a::b.txt")
    assert path == "/tmp/a::b.txt"


def test_every_name_on_the_command_line_is_that_file(named):
    given = [str(named / n) for n in NAMES + [WITH_NEWLINE]]
    s = dp.discover(given)
    assert s.missing == ()
    assert sorted(src.path for src in s) == sorted(given)


def test_every_name_in_a_list_file_is_that_file(named):
    lst = write(named / "list of files.txt", "\n".join(LINE_SAFE) + "\n")
    s = dp.discover("@" + str(lst))
    assert s.missing == ()
    assert sorted(src.path for src in s) == sorted(str(named / n) for n in LINE_SAFE)


def test_a_pattern_that_is_no_file_is_still_a_glob(named):
    s = dp.discover(str(named / "br[0-9].txt"))
    assert [src.path for src in s] == [str(named / "br1.txt")]


def test_run_reads_every_name_and_writes_to_an_odd_output(named, tmp_path, client):
    out = tmp_path / "out::x #1"
    given = [str(named / n) for n in NAMES + [WITH_NEWLINE]]
    result = dp.run(given, out, client=client, converter="text")
    assert result.errors == 0 and result.missing == []
    got = sorted(r["text"] for r in dp.open(out))
    assert got == bodies(given)
    assert sorted(r["path"] for r in dp.open(out)) == sorted(given)


@pytest.mark.slow
def test_cli_reads_every_name_given_and_listed(named, tmp_path, cluster):
    lst = write(tmp_path / "lists" / "names.lst", "".join(f"../{named.name}/{n}\n" for n in LINE_SAFE))
    out = tmp_path / "o::ut"
    # "--" ends the options: a leading dash is then a name (as in any Unix tool)
    cmd = dask_prep_cli() + ["run", "-o", str(out), "--scheduler", cluster.scheduler_address, "-q",
                             "--", "@" + str(lst), str(named / WITH_NEWLINE), "-leading-dash.txt"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=named, env=env_without_client(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "not found" not in proc.stderr + proc.stdout
    got = [r["text"] for r in dp.open(out)]
    assert sorted(got) == bodies(LINE_SAFE + [WITH_NEWLINE])  # the dash file once, listed and given
