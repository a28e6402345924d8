import json
import textwrap

import pytest

import dask_prep as dp
from dask_prep.ingest import converters
from dask_prep.ingest.converters import ByValue, resolve_converter
from helpers import write


def test_sentences_unicode_and_cjk(tmp_path):
    p = write(tmp_path / "zh.txt", "我爱北京。天气很好！Is it? Yes… Done.\n\nNew paragraph")
    recs = list(converters.sentences(str(p)))
    assert [r["text"] for r in recs] == ["我爱北京。", "天气很好！", "Is it?", "Yes…", "Done.",
                                         "New paragraph"]
    assert recs[0]["words"] == ["我", "爱", "北", "京"]
    assert recs[2]["words"] == ["Is", "it"]


def test_words_keep_accented_letters_and_digits():
    assert dp.words("Größe 42, naïve café!") == ["Größe", "42", "naïve", "café"]


def test_text_and_lines(tmp_path):
    p = write(tmp_path / "t.txt", "one\n\n  \ntwo\n")
    assert converters.text(str(p)) == [{"path": str(p), "text": "one\n\n  \ntwo\n"}]
    assert list(converters.lines(str(p))) == [{"text": "one"}, {"text": "two"}]


def test_csv_rows_keyed_by_header(tmp_path):
    p = write(tmp_path / "t.csv", 'a,b\n1,"x, y"\n2,"multi\nline"\n')
    assert list(converters.csv(str(p))) == [{"a": "1", "b": "x, y"}, {"a": "2", "b": "multi\nline"}]


def test_jsonl_bad_lines_reported_with_numbers_good_kept(tmp_path):
    from dask_prep.ingest.bad_items import SourceContext, converting
    p = write(tmp_path / "t.jsonl", '{"a": 1}\nnot json\n\n{"a": 2}\n{"a":\n')
    with converting(SourceContext(str(p), "skip")) as ctx:
        recs = list(converters.jsonl(str(p)))
    assert recs == [{"a": 1}, {"a": 2}]
    assert [(e.line, e.error) for e in ctx.errors] == [(2, "JSONDecodeError"), (5, "JSONDecodeError")]
    with converting(SourceContext(str(p), "raise")):
        with pytest.raises(dp.ConversionError, match=r"t.jsonl, line 2: JSONDecodeError"):
            list(converters.jsonl(str(p)))


def test_resolve_builtin_binds_encoding_errors():
    conv = resolve_converter("sentences", encoding_errors="replace")
    assert conv.name == "sentences" and dict(conv.options) == {
        "errors": "replace", "segmenter": "rules", "word_segmenter": "rules"}
    assert conv.splittable and resolve_converter("jsonl").splittable and not resolve_converter("text").splittable


def test_resolve_unknown_names_the_choices():
    with pytest.raises(dp.ConverterNotFoundError, match="unknown converter 'nope'.*sentences"):
        resolve_converter("nope")
    with pytest.raises(dp.ConverterNotFoundError, match="cannot import module"):
        resolve_converter("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="encoding_errors"):
        resolve_converter("text", encoding_errors="ignore")


def test_file_converter_is_shipped_by_value(tmp_path):
    f = write(tmp_path / "myconv.py", textwrap.dedent("""
        import json
        def shout(path):
            return [{"path": path, "n": len(open(path).read())}]
    """))
    conv = resolve_converter(f"{f}:shout")
    assert isinstance(conv.fn, ByValue)
    clone = __import__("pickle").loads(__import__("pickle").dumps(conv))
    doc = write(tmp_path / "d.txt", "abc")
    assert list(clone(str(doc))) == [{"path": str(doc), "n": 3}]
    with pytest.raises(dp.ConverterNotFoundError, match="has no function 'nope'"):
        resolve_converter(f"{f}:nope")


def test_register_refuses_a_taken_name(monkeypatch):
    monkeypatch.setattr(converters, "_REGISTRY", dict(converters._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        dp.register_converter("text", json.loads)
    dp.register_converter("t_upper", lambda p: [{"t": open(p).read().upper()}])
    assert "t_upper" in dp.converter_names()
