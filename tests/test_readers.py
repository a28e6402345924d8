import bz2
import gzip
import lzma

import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from dask_prep.ingest import readers
from dask_prep.errors import BinaryFileError, EmptyFileError
from dask_prep.ingest.readers import iter_lines, read_text
from dask_prep.write.output import ERRORS
from helpers import write

TEXT = "première ligne\nsecond line\n"


@pytest.mark.parametrize("suffix,compress", [
    ("", lambda b: b), (".gz", None), (".bz2", bz2.compress), (".xz", lzma.compress),
    (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_compressed_files_read_transparently(tmp_path, suffix, compress):
    p = tmp_path / f"doc.txt{suffix}"
    if compress is None:
        write(p, TEXT)
    else:
        p.write_bytes(compress(TEXT.encode()))
    assert read_text(str(p)) == TEXT
    assert [line for _, line in iter_lines(str(p))] == ["première ligne", "second line"]


COMPRESS = {".gz": lambda b: gzip.compress(b, mtime=0), ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}
LONG = "".join(f"line {i} of a long file\n" for i in range(20_000)).encode()


@pytest.mark.parametrize("suffix", list(COMPRESS))
@pytest.mark.parametrize("cut", [1, 100, "half"])
def test_a_cut_compressed_file_is_an_error_never_a_shorter_document(tmp_path, suffix, cut):
    data = COMPRESS[suffix](LONG)
    p = tmp_path / f"cut.txt{suffix}"
    p.write_bytes(data[: -(len(data) // 2 if cut == "half" else cut)])
    with pytest.raises(EOFError, match="ended before the end"):
        read_text(str(p))
    with pytest.raises(EOFError, match="ended before the end"):
        for _ in iter_lines(str(p)):
            pass


def test_a_zst_file_of_several_frames_is_read_whole(tmp_path):
    c = zstandard.ZstdCompressor()
    p = tmp_path / "frames.txt.zst"
    p.write_bytes(c.compress(LONG[:1000]) + c.compress(b"") + c.compress(LONG[1000:]))
    assert read_text(str(p)).encode() == LONG
    assert sum(1 for _ in iter_lines(str(p))) == 20_000


@pytest.mark.slow  # a run on the session cluster
def test_run_reports_each_cut_file_and_keeps_every_other_record(tmp_path, client):
    import json

    import dask_prep as dp
    for suffix, compress in COMPRESS.items():
        data = compress(LONG)
        (tmp_path / "in" / "good").mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / "good" / f"whole.txt{suffix}").write_bytes(data)
        (tmp_path / "in" / f"cut.txt{suffix}").write_bytes(data[:-1])
    write(tmp_path / "in" / "plain.txt", "plain line\n")
    result = dp.run([tmp_path / "in"], tmp_path / "out", client=client, converter="lines")
    assert result.records == 4 * 20_000 + 1
    errors = [json.loads(line) for line in (tmp_path / "out" / ERRORS).read_text().splitlines()]
    assert sorted(e["path"] for e in errors) == sorted(str(tmp_path / "in" / f"cut.txt{s}") for s in COMPRESS)
    assert {e["error"] for e in errors} == {"EOFError"}


def test_binary_file_refused_with_offset(tmp_path):
    p = write(tmp_path / "img.txt", b"GIF89a\x00\x01\x02")
    with pytest.raises(BinaryFileError, match="NUL byte at offset 6"):
        read_text(str(p))


def test_invalid_utf8_strict_names_position_replace_keeps_text(tmp_path):
    p = write(tmp_path / "latin1.txt", "café".encode("latin-1"))
    with pytest.raises(UnicodeDecodeError, match="position 3"):
        read_text(str(p))
    assert read_text(str(p), errors="replace") == "caf\ufffd"


def test_bom_is_dropped(tmp_path):
    p = write(tmp_path / "bom.txt", "\ufeffhello".encode())
    assert read_text(str(p)) == "hello"


def test_corrupt_gzip_raises(tmp_path):
    p = tmp_path / "bad.txt.gz"
    words = " ".join(str(i * 7919 % 10007) for i in range(5000))
    p.write_bytes(write(tmp_path / "ok.txt.gz", words).read_bytes()[:500])
    with pytest.raises((EOFError, OSError)):
        read_text(str(p))


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab é\n", max_size=12), min_size=1, max_size=30)
       .filter(lambda ls: "".join(ls)),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_byte_ranges_tile_a_file_into_every_line_once(tmp_path_factory, lines, cuts):
    data = "\n".join(lines).encode()
    p = tmp_path_factory.mktemp("ranges") / "f.txt"
    p.write_bytes(data)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [line for a, b in zip(bounds, bounds[1:]) for _, line in iter_lines(str(p), a, b)]
    assert pieces == [line for _, line in iter_lines(str(p))]
    assert pieces == data.decode().splitlines()


@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet="ab é.!?\n \t\r", min_size=1, max_size=300).filter(str.strip),
       cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=6))
def test_sentences_over_byte_ranges_are_the_sentences_of_the_whole_file(tmp_path_factory, text, cuts):
    from dask_prep.ingest.converters import sentences
    data = text.encode()
    p = tmp_path_factory.mktemp("prose") / "f.txt"
    p.write_bytes(data)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [r for a, b in zip(bounds, bounds[1:]) for r in sentences(str(p), start=a, end=b)]
    assert pieces == list(sentences(str(p)))


@pytest.mark.parametrize("name", ["empty.txt", "empty.txt.gz"])
def test_empty_documents_are_errors(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")  # a zero-byte .gz is not even a valid gzip file
    with pytest.raises(EmptyFileError, match="empty document"):
        read_text(str(p))
    with pytest.raises(EmptyFileError):
        list(iter_lines(str(p)))


@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_lines_across_blocks_and_ranges(tmp_path, monkeypatch, block):
    """Blocks cut lines anywhere (a line of 50 bytes spans blocks of 7): every
    range split still yields each line once, CRLF and the BOM removed."""
    monkeypatch.setattr(readers, "_BLOCK", block)
    p = write(tmp_path / "f.txt", "\ufeffone\r\n" + "x" * 50 + "\r\n\r\nthé\nlast")
    expect = ["one", "x" * 50, "", "thé", "last"]
    assert list(iter_lines(str(p))) == list(enumerate(expect, 1))
    for cut in range(1, p.stat().st_size):
        head = [line for _, line in iter_lines(str(p), 0, cut)]
        assert head + [line for _, line in iter_lines(str(p), cut, None)] == expect, cut


def test_invalid_utf8_in_a_line_file_names_its_position(tmp_path):
    p = write(tmp_path / "f.jsonl", b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(UnicodeDecodeError, match="position 10"):
        list(iter_lines(str(p)))
    assert [line for _, line in iter_lines(str(p), errors="replace")][1] == '{"b": "caf\ufffd"}'


def test_line_numbers_only_from_start(tmp_path):
    p = write(tmp_path / "f.txt", "a\nb\nc\n")
    assert list(iter_lines(str(p))) == [(1, "a"), (2, "b"), (3, "c")]
    assert list(iter_lines(str(p), 2, None)) == [(None, "b"), (None, "c")]


def test_binary_line_file_refused(tmp_path):
    p = write(tmp_path / "f.jsonl", b'{"a": 1}\n\x00\x01')
    with pytest.raises(BinaryFileError, match="offset 9"):
        list(iter_lines(str(p)))
