"""Thought Gestalt model and adapter: memory semantics, data layout, scoring parity, ablations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tgbench.adapter import Vocab
from tgbench.errors import UserError
from tgbench.models.tg import (
    Block,
    CrossAttention,
    StepInputs,
    TGAdapter,
    TGConfig,
    TGSpanAdapter,
    TGSpanConfig,
    stream_batch,
)

VOCAB = Vocab(base_size=100)


def tiny(**overrides) -> TGAdapter:
    settings = dict(width=32, layers=4, heads=2, dropout=0.0, attention_dropout=0.0, memory_slots=4,
                    max_sentence_tokens=12)
    settings.update(overrides)
    return TGAdapter(TGConfig(**settings))


def make_doc(rng: np.random.Generator, sentences: int, mean_len: float = 6.0) -> list[np.ndarray]:
    return [rng.integers(0, VOCAB.base_size, size=max(1, rng.poisson(mean_len))) for _ in range(sentences)]


def build(adapter: TGAdapter, seed: int = 0):
    torch.manual_seed(seed)
    return adapter.build(VOCAB)


def one_stream(adapter: TGAdapter, doc) -> object:
    """The whole document as a single stream, as a CPU-tensor batch."""
    return stream_batch([adapter.units(doc, VOCAB)], VOCAB).to("cpu")


# -- parameter counts -----------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "expected"), [("alternate", 85.6e6), ("SC", 114.0e6)])
def test_parameter_count_matches_paper(pattern, expected):
    adapter = TGAdapter(block_pattern=pattern)
    with torch.device("meta"):
        model = adapter.build(Vocab(50257))
    assert abs(adapter.n_params(model) - expected) <= 0.2e6


def test_heads_default_and_sentence_layer():
    assert TGConfig(width=48).n_heads == 1
    assert TGConfig(width=96).n_heads == 2
    assert TGConfig(width=768).n_heads == 12
    assert TGConfig().sentence_block == 7
    assert TGConfig(layers=6).sentence_block == 4  # round(7/12 * 6) = round(3.5) = 4
    assert TGConfig(sentence_layer="last").sentence_block == 12
    with pytest.raises(UserError):
        TGConfig(block_pattern="SCS")
    with pytest.raises(UserError):
        TGConfig(sentence_layer=13)


# -- memory semantics -----------------------------------------------------------------------------


def _two_sentence_grads(adapter: TGAdapter):
    model = build(adapter)
    rng = np.random.default_rng(1)
    batch = one_stream(adapter, make_doc(rng, 2))
    captured = []
    layer = model.blocks[adapter.config.sentence_block - 1]
    layer.register_forward_hook(lambda mod, args, out: captured.append(out))
    out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    step1 = torch.from_numpy(batch.meta["target_step"] == 1)
    nll = torch.nn.functional.cross_entropy(model.lm_head(out["hidden"][step1]), batch.tensors["targets"][step1])
    h0 = captured[0]  # rows of sentence 0 after the sentence block
    grads = torch.autograd.grad(nll, [model.w_sent.weight, out["vectors"][0], h0], allow_unused=True)
    eos_row = int(batch.tensors["eos_rows"][0])
    return grads, eos_row


def test_gradients_reach_earlier_sentence_through_memory():
    (g_wsent, g_m0, g_h0), eos_row = _two_sentence_grads(tiny())
    assert g_wsent is not None and g_wsent.abs().sum() > 0
    assert g_m0 is not None and g_m0.abs().sum() > 0
    # Only the [EOS] hidden state of sentence 0 feeds m_0.
    assert g_h0[eos_row].abs().sum() > 0
    others = torch.ones(len(g_h0), dtype=torch.bool)
    others[eos_row] = False
    assert g_h0[others].abs().sum() == 0


def test_detach_memory_stops_gradients():
    (g_wsent, g_m0, g_h0), _ = _two_sentence_grads(tiny(detach_memory=True))
    assert g_wsent is None or g_wsent.abs().sum() == 0
    assert g_m0 is None or g_m0.abs().sum() == 0
    assert g_h0 is None or g_h0.abs().sum() == 0


def test_fifo_drops_oldest_slot():
    adapter = tiny(memory_slots=2)
    model = build(adapter).eval()
    batch = one_stream(adapter, make_doc(np.random.default_rng(2), 5))
    seen = []
    cross = model.readers[0]
    assert isinstance(cross, CrossAttention)
    cross.register_forward_hook(lambda mod, args, out: seen.append(args[2][0].shape[1]))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    assert seen == [1, 2, 2, 2]  # step 0 has no memory; capacity 2 afterwards
    memory = out["memory"]
    assert memory.count == 5
    vectors = out["vectors"]
    for reader, keys, values in zip(model.readers, memory.keys, memory.values, strict=True):
        expected = [reader.memory_kv(vectors[j]) for j in (3, 4)]  # oldest first, sentences 0-2 dropped
        assert torch.allclose(keys, torch.stack([k for k, _ in expected], dim=1))
        assert torch.allclose(values, torch.stack([v for _, v in expected], dim=1))


def test_empty_memory_cross_block_adds_zero():
    config = TGConfig(width=32, layers=2, heads=2, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    block = Block("C", config)
    n = 5
    step = StepInputs(ids=torch.zeros(n, dtype=torch.long), pos=torch.arange(n), grid_index=torch.arange(n),
                      stream=torch.zeros(n, dtype=torch.long), bos_rows=torch.zeros(1, dtype=torch.long),
                      eos_rows=torch.full((1,), n - 1), n_streams=1, max_len=n)
    x = torch.randn(n, 32)
    out = block(x, step, [None])
    assert torch.equal(out, x + block.mlp(block.ln_mlp(x)))  # the cross sub-layer contributes exactly 0
    memory = (torch.randn(1, 3, 32), torch.randn(1, 3, 32))
    assert not torch.allclose(block(x, step, [memory]), out)


@pytest.mark.parametrize("seeding", [True, False])
def test_context_seeding_puts_previous_vector_at_bos(seeding):
    adapter = tiny(context_seeding=seeding)
    model = build(adapter).eval()
    batch = one_stream(adapter, make_doc(np.random.default_rng(3), 3))
    inputs = []
    model.drop.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    bos = model.wte.weight[VOCAB.bos_id] + model.wpe.weight[0]
    assert torch.allclose(inputs[0][0], bos)  # the first sentence keeps the learned [BOS]
    for t in (1, 2):
        expected = out["vectors"][t - 1][0] + model.wpe.weight[0] if seeding else bos
        assert torch.allclose(inputs[t][0], expected)


# -- schedules and data layout --------------------------------------------------------------------


def test_eos_weight_and_curriculum_schedules():
    config = TGConfig()
    assert config.eos_weight(0) == 1.0 and config.eos_weight(1) == 0.05 and config.eos_weight(7) == 0.05
    assert [config.stream_sentences(e) for e in (0, 4, 5, 10)] == [30, 30, 42, 54]
    fixed = TGConfig(curriculum=False)
    assert [fixed.stream_sentences(e) for e in (0, 5, 10)] == [40, 40, 40]


def test_eos_weight_changes_the_loss():
    adapter = tiny()
    model = build(adapter)
    batch = one_stream(adapter, make_doc(np.random.default_rng(4), 3))
    first, later = adapter.loss(model, batch, epoch=0), adapter.loss(model, batch, epoch=1)
    assert not torch.isclose(first.loss, later.loss)
    assert torch.isclose(first.lexical_nll_sum, later.lexical_nll_sum)  # specials never count


def test_rechunking_follows_the_curriculum():
    rng = np.random.default_rng(5)
    docs = [make_doc(rng, 100, mean_len=2) for _ in range(3)]
    adapter = tiny(max_sentence_tokens=64)
    counts = {}
    for epoch in (0, 5, 10):
        batches = adapter.batches(docs, VOCAB, batch_tokens=50, epoch=epoch, rng=np.random.default_rng(epoch))
        counts[epoch] = sum(b.meta["streams"] for b in batches)
        assert sum(b.sentences for b in batches) == 300
    assert counts == {0: 3 * 4, 5: 3 * 3, 10: 3 * 2}  # ceil(100 / S) streams per document


def test_batches_are_deterministic_and_cover_every_token():
    rng = np.random.default_rng(6)
    docs = [make_doc(rng, int(rng.integers(1, 40))) for _ in range(30)]
    adapter = tiny()
    a = adapter.batches(docs, VOCAB, batch_tokens=300, epoch=0, rng=np.random.default_rng([7, 0]))
    b = adapter.batches(docs, VOCAB, batch_tokens=300, epoch=0, rng=np.random.default_rng([7, 0]))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert all(np.array_equal(x.tensors[k], y.tensors[k]) for k in x.tensors)
    assert sum(x.lexical_tokens for x in a) == sum(len(s) for d in docs for s in d)
    # Streams inside a batch are sorted longest first: alive streams are a prefix at every step.
    for batch in a:
        alive = [s1 - s0 for _, _, s0, s1, _ in batch.meta["steps"]]
        assert alive == sorted(alive, reverse=True)


def test_layout_targets_bos_eos_eod():
    doc = [np.array([5, 6]), np.array([7])]
    batch = stream_batch([tiny().units(doc, VOCAB)], VOCAB)
    B, E, D = VOCAB.bos_id, VOCAB.eos_id, VOCAB.eod_id
    assert batch.tensors["ids"].tolist() == [B, 5, 6, E, B, 7, D, E]
    assert batch.tensors["targets"].tolist() == [5, 6, E, 7, D, E]
    assert batch.lexical_tokens == 3 and batch.sentences == 2


def test_long_sentences_are_split_at_the_cap():
    adapter = tiny(max_sentence_tokens=4)
    units = adapter.units([np.arange(10), np.arange(3)], VOCAB)
    assert [len(u) for u in units] == [4, 4, 2, 4]  # the last unit holds 3 tokens + [EOD]
    assert np.concatenate(units)[:-1].tolist() == list(range(10)) + [0, 1, 2]


def test_padding_efficiency_with_bucketing():
    """Sentences ~ Poisson(25), documents of 5-80 sentences, 4096-token batches."""
    rng = np.random.default_rng(8)
    docs = [make_doc(rng, int(rng.integers(5, 80)), mean_len=25) for _ in range(120)]
    adapter = TGAdapter(TGConfig(width=32, layers=2))
    batches = adapter.batches(docs, VOCAB, batch_tokens=4096, epoch=0, rng=np.random.default_rng(0))
    lexical = sum(b.lexical_tokens for b in batches)
    computed = sum(b.computed_slots for b in batches)
    assert lexical / computed > 0.85
    # Padding inside the attention grid stays bounded too (the grid is per step, never 66 wide).
    assert lexical / sum(b.meta["grid_slots"] for b in batches) > 0.6


# -- scoring ----------------------------------------------------------------------------------------


def test_score_matches_training_loss_lexical_nll():
    rng = np.random.default_rng(9)
    adapter = tiny(memory_slots=3, max_sentence_tokens=8, curriculum=False, fixed_stream_sentences=1000)
    model = build(adapter).eval()
    docs = [make_doc(rng, 9), make_doc(rng, 2), make_doc(rng, 5, mean_len=12)]
    scores = adapter.score(model, docs, VOCAB)
    for doc, logp in zip(docs, scores, strict=True):
        assert logp.dtype == torch.float32 and len(logp) == sum(len(s) for s in doc)
        batches = adapter.batches([doc], VOCAB, batch_tokens=10**6, epoch=3, rng=np.random.default_rng(0))
        assert len(batches) == 1 and batches[0].meta["streams"] == 1
        with torch.no_grad():
            parts = adapter.loss(model, batches[0].to("cpu"), epoch=3)
        assert parts.lexical_tokens == len(logp)
        assert torch.isclose(parts.lexical_nll_sum, -logp.sum(), rtol=1e-5)
        # Scoring alone or batched with other documents gives the same per-token values.
        alone = adapter.score(model, [doc], VOCAB)[0]
        assert torch.allclose(alone, logp, atol=1e-5)


def test_score_never_cuts_documents():
    rng = np.random.default_rng(10)
    adapter = tiny(stream_start=3, memory_slots=4)
    model = build(adapter).eval()
    doc = make_doc(rng, 12)
    score_batches = adapter.score_batches([doc, make_doc(rng, 4)], VOCAB)
    assert all(b.meta["streams"] == len(ids) for ids, b in score_batches)
    assert sum(len(b.meta["steps"]) for ids, b in score_batches if 0 in ids) == 12
    whole = adapter.score(model, [doc], VOCAB)[0]
    second_half = adapter.score(model, [doc[6:]], VOCAB)[0]
    assert not torch.allclose(whole[-len(second_half):], second_half)  # memory carried across the cut


def test_score_handles_empty_documents():
    adapter = tiny()
    model = build(adapter).eval()
    scores = adapter.score(model, [[], [np.array([], dtype=np.int64)], [np.array([3, 4])]], VOCAB)
    assert [len(s) for s in scores] == [0, 0, 2]


# -- ablations, variants, checkpointing -----------------------------------------------------------


ABLATIONS = [
    {},
    {"detach_memory": True},
    {"use_memory": False},
    {"memory_mode": "prefix"},
    {"memory_mode": "prefix", "block_pattern": "P"},
    {"sentence_layer": "last"},
    {"sentence_layer": 1},
    {"sentence_pool": "mean"},
    {"context_seeding": False},
    {"eos_weight_after_first_epoch": 1.0},
    {"curriculum": False, "fixed_stream_sentences": 4},
    {"max_sentence_tokens": 4},
    {"memory_slots": 1},
    {"block_pattern": "SC"},
    {"block_pattern": "CS"},
    {"block_pattern": "P"},
    {"sentence_norm": True},
    {"checkpoint_steps": True},
    {"dropout": 0.1, "attention_dropout": 0.2},
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_switch_trains(overrides):
    adapter = tiny(stream_start=5, **overrides)
    model = build(adapter).train()
    rng = np.random.default_rng(11)
    docs = [make_doc(rng, 7) for _ in range(4)]
    batch = adapter.batches(docs, VOCAB, batch_tokens=150, epoch=1, rng=np.random.default_rng(0))[0]
    parts = adapter.loss(model, batch.to("cpu"), epoch=1)
    parts.loss.backward()
    assert torch.isfinite(parts.loss) and torch.isfinite(parts.lexical_nll_sum)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    assert len(adapter.score(model, docs[:1], VOCAB)[0]) == sum(len(s) for s in docs[0])


def test_use_memory_false_has_no_cross_sentence_signal():
    adapter = tiny(use_memory=False)
    model = build(adapter).eval()
    rng = np.random.default_rng(12)
    doc = make_doc(rng, 3)
    other = [make_doc(rng, 1)[0], *doc[1:]]
    a, b = adapter.score(model, [doc, other], VOCAB)
    n0 = len(doc[0])
    assert torch.allclose(a[n0:], b[len(other[0]):], atol=1e-6)


def test_checkpoint_steps_same_loss_and_grads():
    rng = np.random.default_rng(13)
    docs = [make_doc(rng, 6) for _ in range(3)]
    results = []
    for ckpt in (False, True):
        adapter = tiny(checkpoint_steps=ckpt, stream_start=4)
        model = build(adapter).train()
        batch = adapter.batches(docs, VOCAB, batch_tokens=10**6, epoch=0, rng=np.random.default_rng(0))[0]
        parts = adapter.loss(model, batch.to("cpu"), epoch=0)
        parts.loss.backward()
        results.append((parts.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name


def test_bf16_autocast_runs():
    adapter = tiny()
    model = build(adapter).train()
    batch = one_stream(adapter, make_doc(np.random.default_rng(14), 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = adapter.loss(model, batch, epoch=0)
    parts.loss.backward()
    assert torch.isfinite(parts.loss)


# -- generation -----------------------------------------------------------------------------------


def test_generate_continues_the_last_sentence_greedily():
    adapter = tiny()
    model = build(adapter, seed=3).eval()
    rng = np.random.default_rng(15)
    prompt = make_doc(rng, 3)
    first = adapter.generate(model, prompt, VOCAB, max_new_tokens=1)
    # The same prediction through the training layout: the prompt's last sentence continued.
    units = [*adapter.prompt_units(prompt[:-1]), np.append(prompt[-1], 0)]
    batch = stream_batch([units], VOCAB).to("cpu")
    with torch.no_grad():
        hidden = model.run(batch.tensors, batch.meta["steps"])["hidden"]
    row = len(batch.tensors["targets"]) - 2  # the row predicting the appended token
    logits = model.lm_head(hidden[row])
    logits[VOCAB.pad_id] = logits[VOCAB.bos_id] = float("-inf")
    expected = int(logits.argmax())
    assert expected < VOCAB.base_size, "pick a seed where the greedy token is a content token"
    assert first == [expected]
    longer = adapter.generate(model, prompt, VOCAB, max_new_tokens=30)
    assert len(longer) <= 30 and all(0 <= t < VOCAB.base_size for t in longer)
    assert longer[:1] == first
    stopped = adapter.generate(model, prompt, VOCAB, max_new_tokens=30, stop=[longer[:1]])
    assert stopped == longer[:1]
    assert adapter.generate(model, [], VOCAB, max_new_tokens=5) == adapter.generate(model, [], VOCAB,
                                                                                    max_new_tokens=5)


# -- fixed token spans ------------------------------------------------------------------------------


def test_span_adapter_units_and_scoring():
    adapter = TGSpanAdapter(TGSpanConfig(width=32, layers=4, heads=2, dropout=0.0, attention_dropout=0.0,
                                         span_tokens=5, memory_slots=3, curriculum=False,
                                         fixed_stream_sentences=1000))
    assert TGSpanAdapter.name == "tg-span" and TGSpanAdapter.config_class is TGSpanConfig
    doc = make_doc(np.random.default_rng(16), 4)
    units = adapter.units(doc, VOCAB)
    n = sum(len(s) for s in doc)
    assert [len(u) for u in units[:-1]] == [5] * (len(units) - 1) and len(units) == -(-(n + 1) // 5)
    model = build(adapter).eval()
    assert model.wpe.num_embeddings == 7
    logp = adapter.score(model, [doc], VOCAB)[0]
    assert len(logp) == n
    batch = adapter.batches([doc], VOCAB, batch_tokens=10**6, epoch=2, rng=np.random.default_rng(0))[0]
    with torch.no_grad():
        parts = adapter.loss(model, batch.to("cpu"), epoch=2)
    assert torch.isclose(parts.lexical_nll_sum, -logp.sum(), rtol=1e-5)
    assert len(adapter.generate(model, doc[:2], VOCAB, max_new_tokens=12)) <= 12


def test_span_adapter_seeding_switch_and_big_spans():
    adapter = TGSpanAdapter(width=32, layers=2, heads=2, span_tokens=75, context_seeding=False)
    model = adapter.build(VOCAB)
    assert model.wpe.num_embeddings == 77
    assert dataclasses.asdict(adapter.config)["context_seeding"] is False
