"""Long documents: document shape in `data stats`, loss by sentence position, memory reads,
effective context and the context-parity warning, and GPT-2's sliding-window scoring."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from corpora import write_family_corpus

from tgbench.data.corpus import Split, document_shape, load_corpus
from tgbench.plan.config import DataConfig, RunConfig, TrainConfig
from tgbench.registry import build_adapter
from tgbench.tasks.tg_ppl import positions

NAMES = ["Anna", "Tom", "Mary", "John", "Paul", "Emma", "Jack", "Lucy"]


# -- sentence-position buckets (pure functions) ---------------------------------------------------------
def test_bucket_boundaries_double():
    expected = {1: "1", 2: "2", 3: "3-4", 4: "3-4", 5: "5-8", 8: "5-8", 9: "9-16", 16: "9-16", 17: "17-32",
                32: "17-32", 33: "33+", 500: "33+"}
    for k, name in expected.items():
        assert positions.BUCKETS[positions.bucket_index(k)] == name, k
    assert list(positions.bucket_index(np.array([1, 2, 3, 9, 40]))) == [0, 1, 2, 4, 6]
    with pytest.raises(ValueError):
        positions.bucket_index(0)


def test_loss_by_position_maps_tokens_back_to_their_sentences():
    # Two documents: sentence lengths 2, 1, 3 and 1, 2, 1, 1, 1 (positions 1..5).
    docs = [[[1, 2], [3], [4, 5, 6]], [[7], [8, 9], [1], [2], [3]]]
    logprobs = [np.array([-1.0, -3.0, -2.0, -4.0, -4.0, -4.0]), np.array([-5.0, -1.0, -1.0, -2.0, -6.0, -8.0])]
    entries = positions.loss_by_position(docs, logprobs)
    by = {e["bucket"]: e for e in entries}
    assert [e["bucket"] for e in entries] == list(positions.BUCKETS)
    assert by["1"] == {"bucket": "1", "tokens": 3, "loss": pytest.approx((1 + 3 + 5) / 3)}
    assert by["2"] == {"bucket": "2", "tokens": 3, "loss": pytest.approx((2 + 1 + 1) / 3)}
    assert by["3-4"] == {"bucket": "3-4", "tokens": 5, "loss": pytest.approx((12 + 2 + 6) / 5)}
    assert by["5-8"] == {"bucket": "5-8", "tokens": 1, "loss": pytest.approx(8.0)}
    assert by["33+"] == {"bucket": "33+", "tokens": 0, "loss": None}
    total = sum(e["tokens"] for e in entries)
    assert total == 12
    assert sum(e["loss"] * e["tokens"] for e in entries if e["tokens"]) / total == pytest.approx(
        -sum(float(s.sum()) for s in logprobs) / total)
    with pytest.raises(ValueError, match="document 0 has 6 content tokens but 5 scores"):
        positions.loss_by_position(docs[:1], [logprobs[0][:5]])
    columns = positions.position_metrics(entries)
    assert columns["tokens_sentence_3-4"] == 5 and columns["loss_sentence_33+"] is None
    assert len(columns) == 2 * len(positions.BUCKETS)


# -- data stats: the shape of documents --------------------------------------------------------------
def test_document_shape_counts_sentences_per_document_and_tokens_per_sentence():
    split = Split.from_documents([[[1, 2]], [[1], [2, 3, 4]], [[5, 6, 7, 8], [9], [1, 2]]])
    shape = document_shape(split)
    assert shape.documents == 3 and shape.sentences_max == 3
    assert shape.sentences_mean == pytest.approx(2.0) and shape.sentences_median == 2.0
    assert shape.sentences_p90 == pytest.approx(np.quantile([1, 2, 3], 0.9))
    assert shape.tokens_mean == pytest.approx(13 / 6) and shape.tokens_median == pytest.approx(2.0)


def test_data_stats_prints_the_document_shape_per_split(tmp_path, monkeypatch, capsys):
    from tgbench.cli.app import main

    corpus = write_family_corpus(tmp_path / "wiki.txt", NAMES, n_docs=30, per_doc=(2, 8))
    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setattr(sys, "argv", ["tgbench", "data", "stats", str(corpus), "--tokenizer", "bpe-300",
                                      "--splitter", "blingfire"])
    try:
        main()
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    output = capsys.readouterr().out
    loaded = load_corpus(DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire",
                                    cache_dir=str(tmp_path / "cache")), progress=False)
    assert "sent/doc mean" in output and "tok/sent mean" in output
    for split in ("train", "valid", "test"):
        shape = document_shape(loaded.splits[split])
        row = next(line for line in output.splitlines() if line.strip("│┃ ").startswith(split)
                   and f"{shape.sentences_mean:.1f}" in line)
        for value in (shape.sentences_median, shape.sentences_p90, shape.tokens_mean, shape.tokens_p90):
            assert f"{value:.1f}" in row, (split, value, row)


# -- runs on long documents: positions, memory reads, effective context ------------------------------
def long_run(root, model, **options):
    """A tiny run on documents of 33-45 sentences (each line of the family corpus holds three)."""
    write_family_corpus(root / "wiki.txt", NAMES, n_docs=30, per_doc=(11, 16))
    base = dict(width=32, layers=2, heads=4, dropout=0.0, attention_dropout=0.0)
    config = RunConfig(
        model=model, model_options={**base, **options},
        data=DataConfig(corpus=str(root / "wiki.txt"), tokenizer="bpe-300", splitter="blingfire",
                        cache_dir=str(root / "cache"), valid_fraction=0.1, test_fraction=0.15),
        train=TrainConfig(epochs=2, batch_tokens=512, eval_tokens=400, lr=3e-3, device="cpu", log_every=5),
    )
    from tgbench.training.trainer import train

    return train(config, root / model, progress=False).run_dir


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    tg = long_run(root, "tg", memory_slots=6, stream_start=10, stream_step=4, stream_every=1)
    gpt2 = long_run(root, "gpt2", context=64, score_stride=32)
    return {"tg": tg, "gpt2": gpt2}


@pytest.mark.parametrize("model", ["tg", "gpt2"])
def test_position_buckets_add_up_to_the_scored_tokens(long_runs, model):
    from tgbench.evaluation.evaluate import eval_run
    from tgbench.results.table import collect_row

    status, path, results = eval_run(long_runs[model], "ppl", device="cpu", progress=False)
    assert status == "done"
    saved = json.loads(path.read_text())
    entries = saved["by_sentence_position"]
    metrics = saved["results"]["ppl"]
    assert [e["bucket"] for e in entries] == list(positions.BUCKETS)
    assert sum(e["tokens"] for e in entries) == metrics["tokens"]
    assert entries[-1]["tokens"] > 0 and entries[0]["tokens"] > 0  # first sentences and the 33rd on
    pooled = sum(e["loss"] * e["tokens"] for e in entries if e["tokens"]) / metrics["tokens"]
    assert pooled == pytest.approx(metrics["lexical_loss"], rel=1e-9)
    row = collect_row(long_runs[model])
    assert sum(row[f"ppl.tokens_sentence_{b}"] for b in positions.BUCKETS) == metrics["tokens"]
    assert row["ppl.loss_sentence_1"] == pytest.approx(entries[0]["loss"])
    # The effective context: GPT-2's window; TG's memory span at the test split's sentence length.
    if model == "gpt2":
        assert metrics["effective_context_tokens"] == 64.0 and "memory_slots_per_sentence" not in metrics
        assert row["memory_slots_train"] is None and "ppl.memory_slots_per_sentence" not in row
    else:
        from tgbench.evaluation.loaded import load_run

        test = load_run(long_runs["tg"], device="cpu").corpus.splits["test"]
        assert metrics["effective_context_tokens"] == pytest.approx(6 * test.lexical_tokens / test.n_sentences)
        assert 0 < metrics["memory_slots_per_sentence"] <= 6 and 0 < metrics["memory_full_fraction"] < 1
        assert row["ppl.memory_slots_per_sentence"] == pytest.approx(metrics["memory_slots_per_sentence"])
        assert row["memory_slots_train"] > 0


def test_grid_report_shows_loss_by_sentence_position_and_what_each_model_sees(long_runs):
    import html

    from tgbench.evaluation.evaluate import eval_run
    from tgbench.report.page import render_report

    for run in long_runs.values():
        eval_run(run, "ppl", device="cpu", progress=False)
    grid_dir = long_runs["tg"].parent  # both runs side by side: a grid directory without grid.toml
    page = html.unescape(render_report(grid_dir))
    assert "Loss by sentence position (width 32" in page
    assert "Loss by sentence position minus tg's" in page  # tg, the reference, against gpt2
    assert "What each model can see" in page and "effective context" in page
    tg = json.loads((long_runs["tg"] / "eval" / "ppl.json").read_text())
    first = next(e for e in tg["by_sentence_position"] if e["bucket"] == "1")
    assert f"{first['loss']:.3f}" in page  # the position table's first bucket for tg
    assert f"{tg['results']['ppl']['effective_context_tokens']:,.0f}" in page
    assert "slots/sentence, training" in page  # the runs table's memory column


def _counted_reads(adapter, model, batches):
    """Memory slots the model actually holds at every sentence step, counted inside `TG.step`."""
    counted = {"slots": 0, "sentences": 0}
    original = model.step

    def step(inputs, memory, write=True):
        counted["slots"] += memory.slots(adapter.config.memory_slots) * inputs.n_streams
        counted["sentences"] += inputs.n_streams
        return original(inputs, memory, write)

    model.step = step
    with torch.no_grad():
        for batch in batches:
            model.run(batch.tensors, batch.meta["steps"])
    model.step = original
    return counted


@pytest.mark.parametrize("use_memory", [True, False])
def test_tg_memory_reads_equal_what_the_model_reads(tiny_corpus, use_memory):
    config = RunConfig(model="tg", model_options=dict(width=16, layers=2, heads=2, memory_slots=3,
                                                     stream_start=4, stream_step=2, stream_every=1,
                                                     use_memory=use_memory))
    adapter = build_adapter(config)
    vocab = tiny_corpus.vocab
    model = adapter.build(vocab).eval()
    docs = tiny_corpus.splits["train"].documents()
    for epoch in (0, 2):
        batches = adapter.batches(docs, vocab, batch_tokens=200, epoch=epoch, rng=np.random.default_rng(0))
        batches = [b.to("cpu") for b in batches]
        counted = _counted_reads(adapter, model, batches)
        reads = adapter.memory_reads(docs, vocab, epoch=epoch)
        assert reads.sentences == counted["sentences"] == sum(b.sentences for b in batches)
        assert reads.slots == (counted["slots"] if use_memory else 0)
    scoring = [b.to("cpu") for _, b in adapter.score_batches(docs, vocab)]
    reads = adapter.memory_reads(docs, vocab)
    counted = _counted_reads(adapter, model, scoring)
    assert reads.sentences == counted["sentences"]
    assert reads.slots == (counted["slots"] if use_memory else 0)
    assert reads.per_sentence <= 3


def test_training_summary_records_memory_slots_read(long_runs):
    from tgbench.core.files import read_json
    from tgbench.training.rundir import RunDir

    summary = read_json(RunDir(long_runs["tg"]).summary_path)
    assert 0 < summary["memory_slots_per_sentence"] <= 6 and 0 < summary["memory_full_fraction"] < 1
    assert "memory_slots_per_sentence" not in read_json(RunDir(long_runs["gpt2"]).summary_path)


def test_effective_context_of_each_family():
    mean_tokens = 25.0
    gpt2 = build_adapter(RunConfig(model="gpt2", model_options={"context": 300}))
    assert gpt2.effective_context(mean_tokens).tokens == 300 and gpt2.effective_context(mean_tokens).kind == "window"
    tg = build_adapter(RunConfig(model="tg", model_options={"memory_slots": 40}))
    assert tg.effective_context(mean_tokens).tokens == 1000 and tg.effective_context(mean_tokens).kind == "memory"
    off = build_adapter(RunConfig(model="tg", model_options={"use_memory": False}))
    assert off.effective_context(mean_tokens).tokens == 0
    span = build_adapter(RunConfig(model="tg-span", model_options={"memory_slots": 8, "span_tokens": 25}))
    assert span.effective_context(mean_tokens).tokens == 200


# -- context parity --------------------------------------------------------------------------------------
def _parity_grid(gpt2_context: int, memory_slots: int = 16):
    from tgbench.plan.grid import GridConfig

    return GridConfig.from_dict({
        "name": "parity", "widths": [32], "layers": 2, "budgets": [1000],
        "models": [{"adapter": "tg", "options": {"memory_slots": memory_slots}},
                   {"adapter": "gpt2", "options": {"context": gpt2_context}},
                   {"adapter": "gpt2-boundary", "options": {"context": 1024}}]})


def test_parity_warns_when_gpt2_sees_less_history_than_tg_memory():
    from tgbench.plan.validate import context_parity

    lines = context_parity(_parity_grid(256), mean_sentence_tokens=30.0, mean_document_tokens=800.0)
    assert [kind for kind, _ in lines] == ["warning"]  # gpt2-boundary's 1024 covers the 480-token span
    text = lines[0][1]
    assert "gpt2 (context 256 tokens)" in text and "16 slots x 30.0 tokens" in text and "480 tokens" in text
    assert "at least 480 tokens" in text and "800 tokens" in text
    assert context_parity(_parity_grid(480), 30.0)[0][0] == "ok"  # equal is enough
    assert context_parity(_parity_grid(479), 30.0)[0][0] == "warning"
    # A grid without a memory model (or without a window model) has nothing to compare.
    from tgbench.plan.grid import GridConfig

    only_gpt2 = GridConfig.from_dict({"widths": [32], "budgets": [1000], "models": [{"adapter": "gpt2"}]})
    assert context_parity(only_gpt2, 30.0) == []


def test_validate_and_dry_run_print_the_parity_warning(tmp_path, monkeypatch, capsys):
    from tgbench.cli.app import main

    corpus = write_family_corpus(tmp_path / "wiki.txt", NAMES, n_docs=30, per_doc=(4, 8))
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""name = "parity"
widths = [32]
layers = 2
budgets = [2000]
[data]
corpus = "{corpus}"
tokenizer = "bpe-300"
splitter = "blingfire"
[[models]]
adapter = "tg"
options = {{ memory_slots = 40 }}
[[models]]
adapter = "gpt2"
options = {{ context = 64 }}
""")
    monkeypatch.setenv("TGBENCH_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["tgbench", *map(str, args)])
        capsys.readouterr()
        try:
            main()
        except SystemExit as exit_:
            assert exit_.code in (0, None)
        return " ".join(capsys.readouterr().out.split())

    before = run("validate", grid)
    assert "context parity not checked" in before and "warning" not in before  # nothing encoded by validate
    assert not (tmp_path / "cache").exists()
    load_corpus(DataConfig(corpus=str(corpus), tokenizer="bpe-300", splitter="blingfire",
                           cache_dir=str(tmp_path / "cache")), progress=False)
    for output in (run("validate", grid), run("train-grid", grid, "--dry-run")):
        assert "warning: gpt2 (context 64 tokens) sees less history than tg's memory span (40 slots x" in output


# -- GPT-2's sliding-window scoring -----------------------------------------------------------------------
def _full_context_logprobs(model, sequence: list[int], context: int, starts: list[int]) -> list[float]:
    """log p(sequence[i]) from sequence[starts[i - 1]:i], one forward pass per token (the reference)."""
    out = []
    with torch.no_grad():
        for i in range(1, len(sequence)):
            window = torch.tensor(sequence[starts[i - 1] : i])[None]
            assert window.shape[1] <= context
            out.append(float(torch.log_softmax(model(window)[0, -1].float(), -1)[sequence[i]]))
    return out


@pytest.mark.parametrize("stride", [1, 3, 7, 8])
def test_sliding_window_scores_every_token_once_with_the_longest_context(stride):
    from tgbench.adapter import Vocab

    context, vocab = 8, Vocab(base_size=20)
    adapter = build_adapter(RunConfig(model="gpt2", model_options=dict(
        width=16, layers=2, heads=2, context=context, score_stride=stride, dropout=0.0, attention_dropout=0.0)))
    torch.manual_seed(0)
    model = adapter.build(vocab).eval()
    rng = np.random.default_rng(0)
    document = [rng.integers(0, 20, size=n) for n in (5, 7, 4, 9, 6)]  # 31 tokens, about 4 windows of 8
    tokens = [int(t) for s in document for t in s]
    sequence = [vocab.eod_id, *tokens]  # [EOD] predicts the first token
    scores = adapter.score(model, [document], vocab)[0]
    assert len(scores) == len(tokens)  # every token once
    # Token i (1-based in `sequence`) is predicted from its full left context while that fits the window,
    # then from a window that ends right before it and starts where lm-eval's rolling window starts: at least
    # context - stride + 1 tokens, and exactly `context` tokens with stride 1 (the longest any window allows).
    starts, predicted = [], 0
    for i in range(1, len(sequence)):
        if i <= context:
            starts.append(0)
            continue
        if i > predicted:  # a new window: it predicts `stride` tokens ending at window_end
            window_end = min(i + stride - 1, len(sequence) - 1)
            predicted = window_end
        starts.append(window_end - context)
    lengths = [i - start for i, start in zip(range(1, len(sequence)), starts, strict=True)]
    assert min(lengths[context:]) >= context - stride + 1
    if stride == 1:
        assert lengths == [min(i, context) for i in range(1, len(sequence))]
    reference = _full_context_logprobs(model, sequence, context, starts)
    assert scores.tolist() == pytest.approx(reference, abs=1e-5)


def test_short_documents_get_their_full_left_context_at_any_stride():
    from tgbench.adapter import Vocab

    vocab = Vocab(base_size=20)
    document = [np.array([1, 2, 3]), np.array([4, 5, 6, 7])]
    sequence = [vocab.eod_id, 1, 2, 3, 4, 5, 6, 7]
    for stride in (0, 2, 8):
        adapter = build_adapter(RunConfig(model="gpt2", model_options=dict(
            width=16, layers=1, heads=2, context=8, score_stride=stride, dropout=0.0, attention_dropout=0.0)))
        torch.manual_seed(0)
        model = adapter.build(vocab).eval()
        scores = adapter.score(model, [document], vocab)[0].tolist()
        assert scores == pytest.approx(_full_context_logprobs(model, sequence, 8, [0] * 7), abs=1e-5)
