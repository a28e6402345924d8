"""Segmentation of real text in many scripts (dask_prep.ingest.segment), with
expected outputs written by hand; the optional segmenters (pysbd, jieba) for
real; the converter's identity, so a rerun never mixes old and new segmentation."""
import importlib.metadata
import json
import subprocess
import sys
import unicodedata

import pytest

import dask_prep as dp
from dask_prep.errors import OutputExistsError, SegmenterNotInstalledError
from dask_prep.ingest import segment
from dask_prep.ingest.convert import conversion_identity
from dask_prep.ingest.converters import resolve_converter
from dask_prep.options import ConvertOptions
from helpers import dask_prep_cli, env_without_client, write


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# -- sentences and words, one language at a time ------------------------------------


def test_english_abbreviations_initials_and_decimals_do_not_end_sentences():
    text = ("Dr. Watson met J. R. R. Tolkien in the U.S. in 1937, e.g. at a talk. "
            "Pi is about 3.14 today! Is it? Mr. and Mrs. Smith arrived at 5 p.m. They left.")
    assert dp.split_sentences(text) == [
        "Dr. Watson met J. R. R. Tolkien in the U.S. in 1937, e.g. at a talk.",
        "Pi is about 3.14 today!",
        "Is it?",
        "Mr. and Mrs. Smith arrived at 5 p.m.",
        "They left.",
    ]
    assert dp.words("Pi is about 3.14 today!") == ["Pi", "is", "about", "3", "14", "today"]


def test_english_an_acronym_before_a_capital_ends_the_sentence():
    assert dp.split_sentences("I moved to the U.S. It was cold.") == ["I moved to the U.S.", "It was cold."]
    assert dp.split_sentences('He said "Hi." Then he left.') == ['He said "Hi."', "Then he left."]


def test_a_blank_line_ends_a_sentence_even_after_an_abbreviation():
    assert dp.split_sentences("Ask Dr.\n\nSmith is out.") == ["Ask Dr.", "Smith is out."]


def test_chinese_sentences_and_one_character_a_word():
    text = "我爱北京天安门。天安门上太阳升！你去过吗？他说：“你好。”然后走了。"
    assert dp.split_sentences(text) == ["我爱北京天安门。", "天安门上太阳升！", "你去过吗？",
                                        "他说：“你好。”", "然后走了。"]
    assert dp.words("我爱北京天安门。") == ["我", "爱", "北", "京", "天", "安", "门"]


def test_japanese_kanji_and_kana():
    text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ！"
    assert dp.split_sentences(text) == ["吾輩は猫である。", "名前はまだ無い。", "どこで生れたかとんと見当がつかぬ！"]
    assert dp.words("名前はまだ無い。") == ["名", "前", "は", "ま", "だ", "無", "い"]
    assert dp.split_sentences("本当！？すごい。") == ["本当！？", "すごい。"]


def test_hindi_keeps_its_vowel_signs_and_ends_at_the_danda():
    text = "भारत एक विशाल देश है। यहाँ कई भाषाएँ बोली जाती हैं। क्या आप हिंदी बोलते हैं?"
    assert dp.split_sentences(text) == ["भारत एक विशाल देश है।", "यहाँ कई भाषाएँ बोली जाती हैं।",
                                        "क्या आप हिंदी बोलते हैं?"]
    assert dp.words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert dp.words("यहाँ कई भाषाएँ बोली जाती हैं।") == ["यहाँ", "कई", "भाषाएँ", "बोली", "जाती", "हैं"]


def test_thai_keeps_its_vowels_and_tone_marks():
    text = "ภาษาไทยเป็นภาษาราชการ ของประเทศไทย"
    assert dp.split_sentences(text) == [text]
    assert dp.words(text) == ["ภาษาไทยเป็นภาษาราชการ", "ของประเทศไทย"]


def test_vowelled_arabic_keeps_its_harakat():
    text = "ذَهَبَ الوَلَدُ إِلَى المَدْرَسَةِ. هَلْ قَرَأْتَ الكِتَابَ؟ نَعَمْ."
    assert dp.split_sentences(text) == ["ذَهَبَ الوَلَدُ إِلَى المَدْرَسَةِ.", "هَلْ قَرَأْتَ الكِتَابَ؟", "نَعَمْ."]
    assert dp.words("ذَهَبَ الوَلَدُ إِلَى المَدْرَسَةِ.") == ["ذَهَبَ", "الوَلَدُ", "إِلَى", "المَدْرَسَةِ"]


def test_russian_abbreviations_and_yo():
    text = "Привет, мир! Москва — столица России, т. е. главный город. Ёлка стоит в 5 км от дома."
    assert dp.split_sentences(text) == ["Привет, мир!", "Москва — столица России, т. е. главный город.",
                                        "Ёлка стоит в 5 км от дома."]
    assert dp.words("Москва — столица России, т. е. главный город.") == [
        "Москва", "столица", "России", "т", "е", "главный", "город"]
    assert dp.words(nfd("Мой ёж")) == ["Мой", "ёж"]  # й and ё decomposed
    assert dp.split_sentences("Мы купили хлеб, молоко и т. д. Потом пошли домой.") == [
        "Мы купили хлеб, молоко и т. д.", "Потом пошли домой."]


def test_german_decomposed_umlauts_come_out_composed():
    text = nfd("Grüße aus Köln! Das ist z. B. für Übungen gut. Wir wohnen in Haus Nr. 5 am Markt.")
    assert "u\u0308" in text  # the input really is decomposed
    assert dp.split_sentences(text) == ["Grüße aus Köln!", "Das ist z. B. für Übungen gut.",
                                        "Wir wohnen in Haus Nr. 5 am Markt."]
    assert dp.words(nfd("Grüße aus Köln!")) == ["Grüße", "aus", "Köln"]
    assert dp.words(nfd("Das ist z. B. für Übungen gut.")) == ["Das", "ist", "z", "B", "für", "Übungen", "gut"]


def test_ascii_and_unicode_paths_agree():
    text = "snake_case x2 It's 42."
    assert dp.words(text) == dp.words(text + " é")[:-1] == ["snake_case", "x2", "It", "s", "42"]


# -- the converter on a real file -----------------------------------------------------


MIXED = ("Dr. Smith lives in the U.S. now. 我爱北京。\n\n"
         + nfd("Grüße aus Köln.") + " नमस्ते दुनिया। مَرْحَبًا بِكُمْ.\n")


def test_the_sentences_converter_on_a_gzip_file(tmp_path):
    path = write(tmp_path / "mixed.txt.gz", MIXED)
    records = list(resolve_converter("sentences")(str(path)))
    assert records == [
        {"text": "Dr. Smith lives in the U.S. now.", "words": ["Dr", "Smith", "lives", "in", "the", "U", "S", "now"]},
        {"text": "我爱北京。", "words": ["我", "爱", "北", "京"]},
        {"text": "Grüße aus Köln.", "words": ["Grüße", "aus", "Köln"]},
        {"text": "नमस्ते दुनिया।", "words": ["नमस्ते", "दुनिया"]},
        {"text": "مَرْحَبًا بِكُمْ.", "words": ["مَرْحَبًا", "بِكُمْ"]},
    ]


# -- the optional segmenters, for real ------------------------------------------------


def test_pysbd_sentences():
    text = "Send it to the U.S.A. Thanks. Dr. Smith agreed."
    assert dp.split_sentences(text) == ["Send it to the U.S.A.", "Thanks.", "Dr. Smith agreed."]
    assert dp.split_sentences(text, segmenter="pysbd") == ["Send it to the U.S.A. Thanks.", "Dr. Smith agreed."]
    assert dp.split_sentences("Ich sah z. B. Köln. Dann Bonn.", segmenter="pysbd:de") == [
        "Ich sah z. B. Köln.", "Dann Bonn."]


def test_pysbd_keeps_blank_lines_as_ends():
    assert dp.split_sentences("Ask Dr.\n\nSmith is out", segmenter="pysbd") == ["Ask Dr.", "Smith is out"]


def test_jieba_words():
    assert dp.words("我爱北京天安门。", word_segmenter="jieba") == ["我", "爱", "北京", "天安门"]
    assert dp.words("我爱Python 3.14", word_segmenter="jieba") == ["我", "爱", "Python", "3", "14"]


def test_the_options_reach_the_converter_from_python(tmp_path):
    write(tmp_path / "zh.txt.gz", "我爱北京天安门。Send it to the U.S.A. Thanks.")
    bag = dp.to_bag([tmp_path], "sentences", segmenter="pysbd:zh", word_segmenter="jieba")
    got = bag.compute(scheduler="sync")
    # the rules would end a sentence after "U.S.A."; pysbd does not
    assert [r["words"] for r in got] == [["我", "爱", "北京", "天安门"],
                                         ["Send", "it", "to", "the", "U", "S", "A", "Thanks"]]


@pytest.mark.slow
def test_the_options_reach_the_converter_from_the_cli(tmp_path):
    write(tmp_path / "in" / "a.txt", "我爱北京天安门。Send it to the U.S.A. Thanks.")
    out = tmp_path / "out"
    r = subprocess.run([*dask_prep_cli(), "run", str(tmp_path / "in"), "-o", str(out), "--converter",
                        "sentences", "--segmenter", "pysbd", "--word-segmenter", "jieba", "--workers", "1",
                        "--format", "pickle"],
                       capture_output=True, text=True, env=env_without_client(), timeout=240)
    assert r.returncode == 0, r.stderr
    got = list(dp.open(out, allow_pickle=True))
    assert [r["words"] for r in got] == [["我", "爱", "北京", "天安门"],
                                         ["Send", "it", "to", "the", "U", "S", "A", "Thanks"]]
    manifest = json.loads((out / ".manifest.json").read_text())
    assert manifest["options"]["segmenter"] == "pysbd" and manifest["options"]["word_segmenter"] == "jieba"


def test_a_segmenter_not_installed_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysbd", None)  # as if it were not installed
    with pytest.raises(SegmenterNotInstalledError, match=r"needs the package 'pysbd'.*pip install pysbd"):
        resolve_converter("sentences", segmenter="pysbd")
    with pytest.raises(ImportError):
        resolve_converter("sentences", segmenter="pysbd:de")


def test_the_cli_says_which_package_to_install(tmp_path):
    write(tmp_path / "a.txt", "Hello.")
    code = "import sys; sys.modules['jieba'] = None; from dask_prep.cli import main; main(prog_name='dask-prep')"
    r = subprocess.run([sys.executable, "-c", code, "run", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"),
                        "--converter", "sentences", "--word-segmenter", "jieba"],
                       capture_output=True, text=True, env=env_without_client(), timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "pip install jieba" in r.stderr
    assert not (tmp_path / "out" / ".manifest.json").exists()


def test_unknown_segmenters_and_misplaced_options_are_refused():
    with pytest.raises(ValueError, match="segmenter must be one of 'rules', 'pysbd'"):
        ConvertOptions(segmenter="spacy")
    with pytest.raises(ValueError, match="word_segmenter must be one of 'rules', 'jieba'"):
        ConvertOptions(word_segmenter="mecab")
    with pytest.raises(ValueError, match="pysbd has no rules for language 'xx'"):
        resolve_converter("sentences", segmenter="pysbd:xx")
    with pytest.raises(ValueError, match="options of the built-in 'sentences' converter, not of 'lines'"):
        resolve_converter("lines", word_segmenter="jieba")


# -- identity: a rerun never mixes segmentations ----------------------------------------


def identity(**options) -> str:
    opts = ConvertOptions(converter="sentences", **options)
    return conversion_identity(resolve_converter("sentences", segmenter=opts.segmenter,
                                                 word_segmenter=opts.word_segmenter), opts)


def test_the_identity_changes_with_the_rules_version(monkeypatch):
    before = identity()
    monkeypatch.setattr(segment, "VERSION", segment.VERSION + 1)
    assert identity() != before


def test_the_identity_changes_with_each_segmenter_and_its_version():
    ids = {identity(), identity(segmenter="pysbd"), identity(segmenter="pysbd:de"), identity(word_segmenter="jieba")}
    assert len(ids) == 4
    conv = resolve_converter("sentences", segmenter="pysbd", word_segmenter="jieba")
    assert dict(conv.depends)["pysbd"] == importlib.metadata.version("pysbd")
    assert dict(conv.depends)["jieba"] == importlib.metadata.version("jieba")
    assert "pysbd" in conv.identity and "jieba" in conv.identity


def test_an_installed_segmenter_never_enters_the_default_identity():
    default = resolve_converter("sentences")
    assert "pysbd" not in default.identity and "jieba" not in default.identity
    assert dict(default.depends)["segmentation"] == segment.VERSION


def test_other_converters_keep_their_identity():
    assert resolve_converter("lines").identity == (
        f"lines|[('errors', 'strict')]|dask_prep.ingest.converters:lines@{dp.__version__}")


def test_a_resume_after_the_segmentation_changed_starts_afresh(tmp_path, client, monkeypatch):
    for i in range(6):
        write(tmp_path / "in" / f"f{i}.txt", "".join(f"Doc {i} sentence {j}. " for j in range(50)))
    out = tmp_path / "out"

    def stop(result, done, total):
        if done >= 2:
            raise KeyboardInterrupt

    kw = dict(client=client, converter="sentences", shard_size=40, partition_size=8192)
    with pytest.raises(KeyboardInterrupt):
        dp.run([tmp_path / "in"], out, on_partition=stop, **kw)
    monkeypatch.setattr(segment, "VERSION", segment.VERSION + 1)
    with pytest.raises(OutputExistsError, match="unfinished run with other inputs or options"):
        dp.run([tmp_path / "in"], out, **kw)
    result = dp.run([tmp_path / "in"], out, overwrite=True, **kw)
    assert result.manifest["total_records"] == 300
