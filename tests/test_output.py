"""Output safety: never overwrite or delete what dask-prep did not write."""
import dask.bag as db
import pytest

import dask_prep as dp


def bag(n=7):
    return db.from_sequence([{"i": i} for i in range(n)], npartitions=2)


def test_refuses_a_folder_with_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(dp.OutputExistsError, match=r"1 file\(s\) dask-prep did not write \(notes.txt\)"):
        dp.write_shards(bag(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_overwrite_writes_alongside_and_keeps_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    dp.write_shards(bag(), tmp_path, shard_size=5, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert dp.verify(tmp_path).ok


def test_same_job_again_is_a_no_op_and_other_options_are_refused(tmp_path):
    first = dp.write_shards(bag(), tmp_path, shard_size=5)
    again = dp.write_shards(bag(), tmp_path, shard_size=5)
    assert again == first
    with pytest.raises(dp.OutputExistsError, match="other inputs or options.*--overwrite"):
        dp.write_shards(bag(), tmp_path, shard_size=3)
    replaced = dp.write_shards(bag(), tmp_path, shard_size=3, overwrite=True)
    assert [s["records"] for s in replaced["shards"]] == [3, 3, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".errors.jsonl", ".manifest.json", "shard-00000.parquet", "shard-00001.parquet",
        "shard-00002.parquet"]


def test_output_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(dp.OutputExistsError, match="not a directory"):
        dp.write_shards(bag(), tmp_path / "f")


# -- nothing outside the output is read or deleted; a user's file is never touched --

HOSTILE = ["../canary.txt", "../keep", "", ".", "..", "/etc/passwd", "sub/shard-00000.parquet",
           "shard-00000.parquet/../../canary.txt", "..\\canary.txt", 7, None]


def hostile_setup(tmp_path, entry):
    """A complete dataset in ``out ü`` beside a canary file and a folder of the user's;
    the manifest's first shard entry replaced by ``entry``."""
    import json
    out = tmp_path / "out ü"
    dp.write_shards(bag(), out, shard_size=3)
    (tmp_path / "canary.txt").write_text("canary")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("mine")
    (out / "notes.txt").write_text("my notes")
    m = json.loads((out / ".manifest.json").read_text())
    m["shards"][0]["file"] = entry
    (out / ".manifest.json").write_text(json.dumps(m))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    return out, before


@pytest.mark.parametrize("entry", HOSTILE, ids=repr)
def test_a_hostile_manifest_entry_deletes_and_reads_nothing(tmp_path, entry):
    out, before = hostile_setup(tmp_path, entry)
    with pytest.raises(dp.OutputExistsError, match=r"\.manifest\.json.*not a shard file.*remove"):
        dp.write_shards(bag(), out, shard_size=2, overwrite=True)
    with pytest.raises(dp.ManifestError, match="not a shard file") as info:
        dp.open(out)
    assert "\n" not in str(info.value)
    report = dp.verify(out)
    assert not report.ok and len(report.problems) == 1 and "not a shard file" in report.problems[0]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "canary.txt").read_text() == "canary"
    assert (out / "notes.txt").read_text() == "my notes"


def test_a_shard_name_that_is_a_folder_is_never_deleted(tmp_path):
    """A valid name in the manifest that is a folder (the user's): --overwrite
    refuses to delete it instead of removing it and all it holds."""
    out = tmp_path / "out"
    dp.write_shards(bag(), out, shard_size=3)
    (out / "shard-00000.parquet").unlink()
    (out / "shard-00000.parquet").mkdir()
    (out / "shard-00000.parquet" / "precious.txt").write_text("mine")
    with pytest.raises(dp.OutputExistsError, match="shard-00000.parquet is a directory"):
        dp.write_shards(bag(), out, shard_size=2, overwrite=True)
    assert (out / "shard-00000.parquet" / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize("name", [".errors.jsonl", ".sources.jsonl", "shard-00000.parquet",
                                  "shard-00004.parquet"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_file_with_one_of_our_names_is_never_emptied(tmp_path, name, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("the user's own")
    with pytest.raises(dp.OutputExistsError, match=f"{name}.*not written by dask-prep"):
        dp.write_shards(bag(), out, shard_size=3, overwrite=overwrite)
    assert (out / name).read_text() == "the user's own"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_a_users_version_1_names_are_foreign_and_kept(tmp_path):
    """Without a version 1 manifest, ``errors.jsonl`` is the user's file: refused
    without --overwrite, and kept untouched beside the new dataset with it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "errors.jsonl").write_text("the user's own")
    with pytest.raises(dp.OutputExistsError, match=r"did not write \(errors.jsonl\)"):
        dp.write_shards(bag(), out, shard_size=3)
    dp.write_shards(bag(), out, shard_size=3, overwrite=True)
    assert (out / "errors.jsonl").read_text() == "the user's own" and dp.verify(out).ok


def test_overwrite_removes_exactly_the_old_datasets_files(tmp_path):
    out = tmp_path / "out"
    dp.write_shards(bag(), out, shard_size=2)           # 4 shards
    (out / "notes.txt").write_text("mine")
    dp.write_shards(bag(), out, shard_size=5, overwrite=True)  # 2 shards
    assert sorted(p.name for p in out.iterdir()) == [
        ".errors.jsonl", ".manifest.json", "notes.txt", "shard-00000.parquet", "shard-00001.parquet"]


def test_every_file_is_fsynced_before_its_rename_and_the_folder_around_the_commit(tmp_path, monkeypatch):
    """A crash of the machine after the commit must not lose a shard the manifest names."""
    import os
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    m = dp.write_shards(bag(), out, shard_size=3)
    renames = [e for e in events if e[0] == "rename"]
    finals = {os.path.basename(dst) for _, _, dst in renames}
    assert {s["file"] for s in m["shards"]} | {".manifest.json", ".errors.jsonl"} <= finals
    moved_again = {dst for _, _, dst in renames}  # a staged file renamed into place is synced already
    for event in renames:  # a new file's data reached the disk before it took its name
        _, src, dst = event
        if src not in moved_again:
            assert ("fsync", src) in events[:events.index(event)], dst
    assert any(src in moved_again for _, src, _ in renames)  # the staged-shard path was exercised
    commit = events.index(next(e for e in renames if e[2].endswith(".manifest.json")))
    folder = ("fsync", str(out))
    assert folder in events[:commit], "the shards' renames are durable before the manifest"
    assert folder in events[commit:], "the manifest's rename is durable"
