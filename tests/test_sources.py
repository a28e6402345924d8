import os

import pytest

import dask_prep as dp
from helpers import write


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
    assert s.excluded == 2  # x.txt and y.txt.gz; the excluded folder a/b is not even walked


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


def test_links_to_folders_are_not_followed_links_to_files_are(tree):
    (tree / "a" / "loop").symlink_to(tree / "a", target_is_directory=True)
    (tree / "a" / "to-c.txt").symlink_to(tree / "c.txt")
    s = dp.discover(tree / "a", suffixes=".TXT")  # suffixes ignore case
    assert names(s, tree) == ["a/b/z.txt", "a/to-c.txt", "a/x.txt", "a/y.txt.gz"]
    assert s[1].size == (tree / "c.txt").stat().st_size
