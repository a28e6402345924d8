import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import dask_prep as dp
from dask_prep.write.output import ERRORS, MANIFEST
from helpers import dask_prep_cli, env_without_client, write


@pytest.fixture
def tree(tmp_path):
    for rel in ["a/x.txt", "a/y.txt.gz", "a/b/z.txt", "a/b/skip.md", "a/.hidden/h.txt",
                "a/.dot.txt", "c.txt"]:
        write(tmp_path / rel, f"content of {rel}")
    return tmp_path


def names(sources, root):
    return [os.path.relpath(s.path, root) for s in sources]


def test_directory_is_walked_recursively_sorted_hidden_skipped(tree):
    s = dp.discover(tree / "a")
    assert names(s, tree) == ["a/b/skip.md", "a/b/z.txt", "a/x.txt", "a/y.txt.gz"]
    assert all(src.size > 0 for src in s)


def test_suffix_filter_sees_through_compression(tree):
    s = dp.discover(tree / "a", suffixes=".txt")
    assert names(s, tree) == ["a/b/z.txt", "a/x.txt", "a/y.txt.gz"]
    # the compressed suffix named in full keeps only the compressed files
    assert names(dp.discover(tree / "a", suffixes=".txt.gz"), tree) == ["a/y.txt.gz"]


def test_glob_with_double_star_and_duplicates_removed(tree):
    s = dp.discover([str(tree / "a" / "**" / "*.txt"), str(tree / "a" / "x.txt"), str(tree / "a")],
                    suffixes=[".txt"])
    assert names(s, tree) == ["a/b/z.txt", "a/x.txt", "a/y.txt.gz"]


def test_missing_inputs_are_reported_not_dropped(tree):
    s = dp.discover([str(tree / "c.txt"), str(tree / "nope.txt"), str(tree / "*.none")])
    assert names(s, tree) == ["c.txt"]
    assert s.missing == (str(tree / "nope.txt"), str(tree / "*.none"))
    assert s.summary()["missing"] == list(s.missing)


def test_list_file_relative_to_its_folder(tree):
    lst = write(tree / "lists" / "files.txt", "../c.txt\n\n# comment\n../a/x.txt  \n../gone.txt\n")
    s = dp.discover("@" + str(lst))
    assert names(s, tree) == ["a/x.txt", "c.txt"]
    assert s.missing == (os.path.join(str(tree / "lists"), "../gone.txt"),)


def test_exclude_file_with_trailing_whitespace_and_crlf(tree):
    ex = write(tree / "exclude.lst", "x.txt  \r\n" + str(tree / "a" / "b") + "\r\n*.gz\n")
    s = dp.discover(tree / "a", exclude=str(ex))
    assert names(s, tree) == []
    assert s.excluded == 4  # x.txt, y.txt.gz, and the two files in the excluded folder a/b
    assert s.excluded_files == ((str(tree / "a/b/skip.md"), str(tree / "a" / "b")),
                                (str(tree / "a/b/z.txt"), str(tree / "a" / "b")),
                                (str(tree / "a/x.txt"), "x.txt"), (str(tree / "a/y.txt.gz"), "*.gz"))


def test_relative_exclude_entries_are_relative_to_the_list_folder(tree, tmp_path_factory,
                                                                  monkeypatch):
    ex = write(tree / "lists" / "bad docs.lst", "../a/x.txt\n../a/b/\n")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # not the list's folder
    s = dp.discover(tree / "a", exclude=str(ex))
    assert names(s, tree) == ["a/y.txt.gz"]
    assert [p for p, _ in s.excluded_files] == [str(tree / f"a/{n}") for n in ("b/skip.md", "b/z.txt", "x.txt")]
    assert {by for _, by in s.excluded_files} == {"../a/x.txt", "../a/b/"}


def test_an_exclude_entry_that_matches_nothing_is_warned_once(tree, caplog):
    ex = write(tree / "exclude.lst", "x.txt\nno-such-file.txt\nsubdir/gone/\n*.none\n")
    with caplog.at_level("WARNING", logger="dask_prep"):
        s = dp.discover([tree / "a", tree / "a" / "b"], exclude=str(ex))
    assert s.excluded == 1
    warned = [r.getMessage() for r in caplog.records if "matched nothing" in r.getMessage()]
    assert warned == [f"exclude list {ex}: 3 entries matched nothing: 'no-such-file.txt', "
                      "'subdir/gone/', '*.none'"]


def test_an_excluded_folder_by_name_anywhere_and_its_files_counted(tree):
    write(tree / "a" / "b" / "drafts" / "d1.txt", "draft")
    write(tree / "a" / "drafts" / "d2.txt", "draft")
    s = dp.discover(tree, exclude=["drafts", str(tree / "a" / "b") + "/"], suffixes=".txt")
    assert names(s, tree) == ["a/x.txt", "a/y.txt.gz", "c.txt"]
    assert sorted(os.path.relpath(p, tree) for p, _ in s.excluded_files) == [
        "a/b/drafts/d1.txt", "a/b/z.txt", "a/drafts/d2.txt"]


def test_exclude_as_list_of_patterns(tree):
    s = dp.discover(tree / "a", exclude=["*.md", "z.txt"])
    assert names(s, tree) == ["a/x.txt", "a/y.txt.gz"]


def test_missing_exclude_file_is_a_clear_error(tree):
    with pytest.raises(FileNotFoundError, match="exclude list .*nope.lst"):
        dp.discover(tree, exclude=str(tree / "nope.lst"))


def test_broken_symlink_is_kept_for_conversion_to_report(tree):
    (tree / "a" / "dangling.txt").symlink_to(tree / "gone.txt")
    s = dp.discover(tree / "a", suffixes=".txt")
    assert "a/dangling.txt" in names(s, tree)


def test_fsspec_url(tree):
    s = dp.discover("file://" + str(tree / "a" / "b"))
    assert names(s, tree) == ["a/b/skip.md", "a/b/z.txt"]


def test_digest_changes_with_content_size(tree):
    before = dp.discover(tree).digest()
    (tree / "c.txt").write_text("longer content than before")
    assert dp.discover(tree).digest() != before


def test_links_to_folders_are_followed_once_loops_reported_links_to_files_kept(tree):
    (tree / "a" / "loop").symlink_to(tree / "a", target_is_directory=True)
    (tree / "a" / "to-c.txt").symlink_to(tree / "c.txt")
    s = dp.discover(tree / "a", suffixes=".TXT")  # suffixes ignore case
    assert names(s, tree) == ["a/b/z.txt", "a/to-c.txt", "a/x.txt", "a/y.txt.gz"]
    assert s[1].size == (tree / "c.txt").stat().st_size
    assert s.missing == (f"{tree}/a/loop (link to a folder walked already: a loop or a second "
                         "way in; not followed)",)


def test_a_linked_folder_is_walked_and_a_second_link_to_it_reported(tree):
    (tree / "a" / "b" / "up").symlink_to("..", target_is_directory=True)  # a loop through a parent
    (tree / "a" / "ext1").symlink_to(tree / "c-dir", target_is_directory=True)
    (tree / "a" / "ext2").symlink_to(tree / "c-dir", target_is_directory=True)
    write(tree / "c-dir" / "linked.txt", "linked")
    s = dp.discover(tree / "a", suffixes=".txt")
    assert names(s, tree) == ["a/b/z.txt", "a/ext1/linked.txt", "a/x.txt", "a/y.txt.gz"]
    assert sorted(m.split(" (")[0] for m in s.missing) == [f"{tree}/a/b/up", f"{tree}/a/ext2"]


def test_a_link_loop_among_files_is_kept_for_its_conversion_to_report(tree):
    (tree / "a" / "l1.txt").symlink_to("l2.txt")
    (tree / "a" / "l2.txt").symlink_to("l1.txt")
    s = dp.discover(tree / "a", suffixes=".txt")
    assert names(s, tree) == ["a/b/z.txt", "a/l1.txt", "a/l2.txt", "a/x.txt", "a/y.txt.gz"]
    # and the loop given by name is that (unusable) file too, not a crash
    assert names(dp.discover(tree / "a" / "l1.txt"), tree) == ["a/l1.txt"]


BAD = b"caf\xe9 \xff\xfe.txt"  # Latin-1 bytes: not UTF-8


def test_a_name_that_is_not_utf8_is_a_source_like_any_other(tree):
    with open(os.fsencode(tree / "a") + b"/" + BAD, "wb") as f:
        f.write(b"bytes name")
    lst = write(tree / "names.lst", b"a/" + BAD + b"\n")
    for given in (tree / "a", os.fsencode(tree / "a") + b"/" + BAD, "@" + str(lst)):
        s = dp.discover(given, suffixes=".txt")
        assert os.fsencode(tree / "a") + b"/" + BAD in [os.fsencode(x.path) for x in s], given
        assert len(s.digest()) == 64 and s.missing == ()
        json.dumps(s.summary())  # the manifest's summary can hold it


NOBODY = """
import json, sys
import dask_prep as dp
s = dp.discover(sys.argv[1], suffixes=".txt")
print(json.dumps({"paths": [x.path for x in s], "missing": list(s.missing)}))
"""


def as_nobody(*args, **kw):
    """Run a command as user nobody: root reads any folder, so only another user
    can show what an unreadable one does."""
    cmd = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def can_drop_privileges() -> bool:
    return os.getuid() == 0 and shutil.which("setpriv") is not None


@pytest.fixture
def public_tree():
    """A tree user nobody can enter (pytest's tmp_path belongs to root, mode 700)."""
    d = tempfile.mkdtemp(prefix="dask-prep-public-")
    os.chmod(d, 0o755)
    for rel in ["x.txt", "locked/secret.txt", "open/y.txt"]:
        write(Path(d) / rel, f"content of {rel}")
    os.chmod(Path(d) / "locked", 0o700)  # root's own: nobody cannot read it
    yield Path(d)
    shutil.rmtree(d)


def test_an_unreadable_folder_is_reported_the_rest_kept(public_tree, tmp_path):
    if os.getuid() != 0:  # this user cannot read a folder of mode 000
        os.chmod(public_tree / "locked", 0)
        try:
            s = dp.discover(public_tree, suffixes=".txt")
        finally:
            os.chmod(public_tree / "locked", 0o700)
        got = {"paths": [x.path for x in s], "missing": list(s.missing)}
    else:
        if not can_drop_privileges():
            pytest.skip("running as root without setpriv: root reads every folder")
        script = public_tree / "discover.py"
        script.write_text(NOBODY)
        env = {**os.environ, "PYTHONPATH": str(Path(dp.__file__).parents[1])}
        proc = as_nobody(sys.executable, str(script), str(public_tree), env=env, cwd="/")
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
    assert got["paths"] == [str(public_tree / "open/y.txt"), str(public_tree / "x.txt")]
    assert got["missing"] == [f"{public_tree}/locked (folder not readable: Permission denied)"]


@pytest.mark.slow  # a CLI process on the session cluster
def test_cli_run_on_a_real_tree_names_every_file_it_cannot_use(tree, tmp_path, cluster):
    """Through the real CLI: a name that is not UTF-8 is converted like the rest,
    a link loop is one error entry naming it, a linked folder is read, and the
    manifest, errors and sources files are valid JSON."""
    a = tree / "a"
    with open(os.fsencode(a) + b"/" + BAD, "wb") as f:
        f.write(b"Bytes name.")
    (a / "l1.txt").symlink_to("l2.txt")
    (a / "l2.txt").symlink_to("l1.txt")
    write(tree / "elsewhere" / "linked.txt", "Linked.")
    (a / "ext").symlink_to(tree / "elsewhere", target_is_directory=True)
    out = tmp_path / "out"
    proc = subprocess.run(dask_prep_cli() + ["run", str(a), "-o", str(out), "--suffix", ".txt", "-q",
                                             "--scheduler", cluster.scheduler_address],
                          capture_output=True, text=True, env=env_without_client(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    ds = dp.open(out)
    got = sorted((r["path"], r["text"]) for r in ds)
    assert (f"{a}/caf\\xe9 \\xff\\xfe.txt", "Bytes name.") in got
    assert (f"{a}/ext/linked.txt", "Linked.") in got
    assert len(got) == 5  # b/z.txt, x.txt, y.txt.gz, the bytes name, ext/linked.txt
    errors = [json.loads(line) for line in (out / ERRORS).read_text().splitlines()]
    assert sorted((e["path"], e["error"]) for e in errors) == [
        (f"{a}/l1.txt", "OSError"), (f"{a}/l2.txt", "OSError")]
    assert all("Too many levels of symbolic links" in e["message"] for e in errors)
    json.loads((out / MANIFEST).read_text())
    assert dp.verify(out).ok


@pytest.mark.slow  # a CLI process on the session cluster
def test_cli_exclude_list_relative_to_itself_counted_and_listed_beside_the_dataset(tree, tmp_path,
                                                                                  cluster):
    ex = write(tree / "lists" / "exclude.lst", "../a/b/\n../a/x.txt\nnot-there.txt\n")
    out = tmp_path / "out"
    cmd = dask_prep_cli() + ["run", str(tree / "a"), "-o", str(out), "--exclude", str(ex),
                             "--scheduler", cluster.scheduler_address]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_without_client(), timeout=120,
                          cwd=tmp_path)  # not the list's folder
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("1 entry matched nothing: 'not-there.txt'") == 1
    assert sorted(r["path"] for r in dp.open(out)) == [str(tree / "a" / "y.txt.gz")]
    m = json.loads((out / MANIFEST).read_text())
    assert m["sources"]["excluded"] == 3 and m["sources"]["excluded_file"] == ".excluded.jsonl"
    listed = [json.loads(line) for line in (out / ".excluded.jsonl").read_text().splitlines()]
    assert listed == [{"path": str(tree / "a/b/skip.md"), "entry": "../a/b/"},
                      {"path": str(tree / "a/b/z.txt"), "entry": "../a/b/"},
                      {"path": str(tree / "a/x.txt"), "entry": "../a/x.txt"}]
    # a rerun with --overwrite and nothing excluded leaves no stale list
    proc = subprocess.run(cmd[:cmd.index("--exclude")] + cmd[cmd.index("--scheduler"):] + ["--overwrite"],
                          capture_output=True, text=True, env=env_without_client(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (out / ".excluded.jsonl").exists() and len(list(dp.open(out))) == 4


def test_the_output_folder_inside_an_input_folder_is_never_read(tree, tmp_path):
    out = tree / "a" / "out"
    write(out / "shard-00000.parquet", b"PAR1\x00old shards")
    (tmp_path / "link").symlink_to(tree / "a", target_is_directory=True)
    for given in ([tree / "a"], [tree / "a" / "**"], [out / "shard-00000.parquet", tree / "c.txt"],
                  [tmp_path / "link"]):
        s = dp.discover(given, outside=out)
        assert not [x.path for x in s if "/out/" in x.path], given
    # the output given through a link: its real folder is kept out too
    s = dp.discover(tree / "a", outside=tmp_path / "link" / "out")
    assert names(s, tree) == ["a/b/skip.md", "a/b/z.txt", "a/x.txt", "a/y.txt.gz"]


@pytest.mark.slow  # two CLI runs on the session cluster
def test_cli_rerun_with_overwrite_never_reads_its_own_output(tree, tmp_path, cluster):
    """The output inside the input folder: the second run (--overwrite) is the
    same dataset as the first, and input == output is refused up front."""
    base = dask_prep_cli() + ["run", str(tree / "a"), "--scheduler", cluster.scheduler_address, "-q"]
    kw = dict(capture_output=True, text=True, env=env_without_client(), timeout=120)
    first = subprocess.run(base + ["-o", str(tree / "a" / "out")], **kw)
    assert first.returncode == 0, first.stderr
    before = [r for r in dp.open(tree / "a" / "out")]
    again = subprocess.run(base + ["-o", str(tree / "a" / "out"), "--overwrite"], **kw)
    assert again.returncode == 0, again.stderr
    assert [r for r in dp.open(tree / "a" / "out")] == before and dp.open(tree / "a" / "out").manifest["errors"] == 0
    verify = subprocess.run(dask_prep_cli() + ["verify", "--sources", str(tree / "a" / "out")], **kw)
    assert verify.returncode == 0 and "sources: unchanged" in verify.stdout, verify.stdout
    same = subprocess.run(base + ["-o", str(tree / "a")], **kw)
    assert same.returncode != 0 and "is also an input" in same.stderr
