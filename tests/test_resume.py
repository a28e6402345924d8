"""A run that stops part-way resumes without converting finished partitions again."""
import json
import textwrap

import pytest

import dask_prep as dp
from helpers import write

CONVERTER = textwrap.dedent("""
    import os
    def counted(path):
        log = os.environ["CALLS_LOG"]
        with open(log, "a") as f:
            f.write(path + "\\n")
        if os.path.exists(os.environ["FAIL_FLAG"]) and path.endswith("f013.txt"):
            raise KeyboardInterrupt("simulated stop")  # not a per-file error: the run dies
        return [{"path": os.path.basename(path), "i": i} for i in range(7)]
""")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    conv = write(tmp_path / "conv.py", CONVERTER)
    for i in range(20):
        write(tmp_path / "in" / f"f{i:03d}.txt", "x" * 5000)
    monkeypatch.setenv("CALLS_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAIL_FLAG", str(tmp_path / "fail"))
    return tmp_path, f"{conv}:counted"


def calls(tmp_path):
    path = tmp_path / "calls.log"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [line.rsplit("/", 1)[1] for line in lines]


@pytest.mark.slow
def test_resume_skips_finished_partitions_and_matches_a_clean_run(setup):
    tmp_path, conv = setup
    opts = dict(converter=conv, shard_size=10, partition_size=20_000, workers=1)
    (tmp_path / "fail").touch()
    bag = dp.to_bag(tmp_path / "in", conv, partition_size=20_000)
    with pytest.raises(KeyboardInterrupt):
        dp.write_shards(bag, tmp_path / "out", shard_size=10)
    first = calls(tmp_path)
    assert "f013.txt" in first and not (tmp_path / "out" / ".manifest.json").exists()
    (tmp_path / "fail").unlink()
    res = dp.run([tmp_path / "in"], tmp_path / "out", **opts)
    again = calls(tmp_path)
    # partitions hold 2 files; the one holding f013 failed, whichever order Dask chose
    done_before = set(first) - {"f012.txt", "f013.txt"}
    assert done_before, "no partition finished before the stop: the test proves nothing"
    assert not done_before & set(again), "finished partitions were converted again"
    assert sorted(set(again) | done_before) == [f"f{i:03d}.txt" for i in range(20)]
    assert res.manifest["run"]["resumed_partitions"] == len(done_before) // 2
    dp.run([tmp_path / "in"], tmp_path / "clean", **opts)
    for name in sorted(p.name for p in (tmp_path / "clean").glob("shard-*")):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k != "run"}  # noqa: E731
    assert strip(tmp_path / "out" / ".manifest.json") == strip(tmp_path / "clean" / ".manifest.json")
    assert not (tmp_path / "out" / ".dask-prep").exists()


def test_unfinished_run_with_other_options_is_refused(setup):
    tmp_path, conv = setup
    (tmp_path / "fail").touch()
    with pytest.raises(KeyboardInterrupt):
        dp.write_shards(dp.to_bag(tmp_path / "in", conv, partition_size=20_000), tmp_path / "out",
                        shard_size=10)
    (tmp_path / "fail").unlink()
    with pytest.raises(dp.OutputExistsError, match="unfinished run with other inputs or options"):
        dp.write_shards(dp.to_bag(tmp_path / "in", conv, partition_size=20_000), tmp_path / "out",
                        shard_size=11)
    m = dp.write_shards(dp.to_bag(tmp_path / "in", conv, partition_size=20_000), tmp_path / "out",
                        shard_size=11, overwrite=True)
    assert m["total_records"] == 140 and m["run"]["resumed_partitions"] == 0
