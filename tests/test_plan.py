from dask_prep.ingest.plan import (FILE_COST, MIN_PARTITION, PIECE_SIZE, Piece, auto_partition_size,
                            plan_partitions)
from dask_prep.ingest.sources import Source


def test_partitions_are_contiguous_and_cover_all_sources():
    srcs = [Source(f"f{i:05d}", (i * 7919) % 5000) for i in range(1000)]
    parts = plan_partitions(srcs, partition_size=200_000)
    flat = [p.path for part in parts for p in part]
    assert flat == [s.path for s in srcs]
    weights = [sum(s.size + FILE_COST for s in srcs if s.path in {p.path for p in part}) for part in parts]
    assert max(weights) <= 200_000 and len(parts) >= 30


def test_many_tiny_files_do_not_become_many_tasks():
    srcs = [Source(f"f{i:06d}", 0) for i in range(100_000)]
    parts = plan_partitions(srcs)
    assert 16 <= len(parts) <= 64


def test_one_huge_file_among_tiny_ones_stands_alone():
    srcs = [Source(f"a{i}", 100) for i in range(50)] + [Source("big", 10**9)] + \
        [Source(f"z{i}", 100) for i in range(50)]
    parts = plan_partitions(srcs, partition_size=1_000_000)
    assert [len(p) for p in parts] == [50, 1, 50]


def test_large_line_files_split_only_when_splittable_and_uncompressed():
    big = Source("big.jsonl", 10_000_000)
    split = plan_partitions([big], partition_size=1_000_000, splittable=True)
    assert len(split) == 11 and split[0][0] == Piece("big.jsonl", 0, split[0][0].end)
    assert sum(p[0].end - p[0].start for p in split) == 10_000_000
    assert len(plan_partitions([big], partition_size=1_000_000)) == 1
    assert len(plan_partitions([Source("big.jsonl.gz", 10**7)], partition_size=10**6, splittable=True)) == 1


def test_split_partitions_are_read_in_pieces_that_tile_the_file():
    size = 5 * PIECE_SIZE + 123
    parts = plan_partitions([Source("big.jsonl", size)], partition_size=2 * PIECE_SIZE + FILE_COST + 1,
                            splittable=True)
    pieces = [p for part in parts for p in part]
    assert len(parts) == 3 and all(1 < len(part) <= 3 for part in parts)
    assert all(p.end - p.start <= PIECE_SIZE for p in pieces)
    assert [p.start for p in pieces] == [0] + [p.end for p in pieces[:-1]] and pieces[-1].end == size


def test_plan_does_not_depend_on_anything_but_sources():
    srcs = [Source(f"f{i}", i * 1000) for i in range(300)]
    assert plan_partitions(srcs) == plan_partitions(list(srcs))
    assert auto_partition_size(0) == auto_partition_size(1000)


def test_no_sources_gives_one_empty_partition():
    assert plan_partitions([]) == [()]


def _weights(parts, sizes):
    return [sum((p.end - p.start if p.start is not None else sizes[p.path]) + FILE_COST for p in part)
            for part in parts]


def test_automatic_plan_ends_on_smaller_partitions():
    """The run ends on short tasks, so workers finish together: the last
    partitions shrink (to about an eighth), the rest keep the automatic size."""
    srcs = [Source(f"f{i:05d}", 30_000) for i in range(10_000)]
    sizes = {s.path: s.size for s in srcs}
    parts = plan_partitions(srcs)
    w = _weights(parts, sizes)
    size = auto_partition_size(sum(w))
    assert [p.path for part in parts for p in part] == [s.path for s in srcs]
    assert max(w) <= size and w[0] > size - 34_096
    assert 36 <= len(parts) <= 44
    assert max(w[-4:]) <= size // 8 + 34_096
    assert all(a >= b - 34_096 for a, b in zip(w, w[1:]))  # never growing (by more than one file)
    # a given size is kept to the end
    assert len(set(_weights(plan_partitions(srcs, partition_size=size), sizes)[:-1])) == 1


def test_automatic_plan_of_one_big_file_shrinks_its_last_ranges():
    big = Source("big.jsonl", 2_000_000_000)
    parts = plan_partitions([big], splittable=True)
    w = _weights(parts, {})
    pieces = [p for part in parts for p in part]
    assert [p.start for p in pieces] == [0] + [p.end for p in pieces[:-1]] and pieces[-1].end == big.size
    assert w[0] > 8 * w[-1] * 0.9 and all(a >= b - 1 for a, b in zip(w, w[1:]))  # (rounding)


def test_small_corpora_are_not_cut_below_the_smallest_partition():
    srcs = [Source(f"f{i:04d}", 1000) for i in range(1000)]  # 5 MB with file costs
    w = _weights(plan_partitions(srcs), {s.path: s.size for s in srcs})
    assert min(w[:-1]) > MIN_PARTITION - 5096
