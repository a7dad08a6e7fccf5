"""Thought Gestalt model and adapter: memory semantics, data layout, scoring parity, ablations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tgbench.adapter import Vocab
from tgbench.core.errors import UserError
from tgbench.models.layers import Block, CrossAttention
from tgbench.models.streams import StepInputs, stream_batch
from tgbench.models.tg import TGAdapter, TGConfig, TGSpanAdapter, TGSpanConfig

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


def test_long_sentences_are_resplit_like_the_data_pipeline():
    adapter = tiny(max_sentence_tokens=4)
    units = adapter.units([np.arange(10), np.arange(3)], VOCAB)
    assert [len(u) for u in units] == [4, 3, 3, 4]  # near-equal fragments; the last holds 3 tokens + [EOD]
    assert np.concatenate(units)[:-1].tolist() == list(range(10)) + [0, 1, 2]


def test_half_length_follows_the_pipelines_cap_and_merge():
    """A 32-token model cap re-splits a corpus encoded at 64 as the pipeline would at 32, not by chopping."""
    from tgbench.data.split import cap_and_merge

    rng = np.random.default_rng(20)
    doc = [rng.integers(0, 100, size=n) for n in (40, 33, 12, 64, 2, 5)]
    units = tiny(max_sentence_tokens=32).units(doc, VOCAB)
    lengths = [len(u) for u in units]
    assert lengths[:4] == [20, 20, 17, 16]  # never 32 + 8 or 32 + 1
    assert max(lengths) <= 32 and min(lengths) >= 3
    expected, _, _ = cap_and_merge([d.tolist() for d in doc], 32, 3)
    assert [u.tolist() for u in units[:-1]] == expected[:-1]
    assert units[-1].tolist() == [*expected[-1], VOCAB.eod_id]
    # The same documents and content tokens as at 64: scoring stays comparable across the ablation.
    assert np.concatenate(units)[:-1].tolist() == np.concatenate(doc).tolist()


def test_eod_unit_switch():
    doc = [np.array([5, 6]), np.array([7])]
    assert [u.tolist() for u in tiny().units(doc, VOCAB)] == [[5, 6], [7, VOCAB.eod_id]]
    assert [u.tolist() for u in tiny(eod_unit=True).units(doc, VOCAB)] == [[5, 6], [7], [VOCAB.eod_id]]


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


def test_use_memory_false_writes_nothing_but_keeps_seeding():
    """Release semantics of "no memory": only the memory writes stop; [BOS] seeding still happens."""
    rng = np.random.default_rng(12)
    doc = make_doc(rng, 3)
    other = [make_doc(rng, 1)[0], *doc[1:]]
    n0, n1 = len(doc[0]), len(doc[1])
    adapter = tiny(use_memory=False)
    model = build(adapter).eval()
    calls = []
    for reader in model.readers:
        reader.register_forward_hook(lambda mod, args, out: calls.append(1))
    batch = one_stream(adapter, doc)
    inputs = []
    model.drop.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    assert calls == [] and out["memory"].count == 0  # no C sub-layer ever reads a memory
    assert torch.allclose(inputs[1][0], out["vectors"][0][0] + model.wpe.weight[0])  # seeded [BOS]
    # The previous sentence reaches the next one through the seed.
    a, b = adapter.score(model, [doc, other], VOCAB)
    assert not torch.allclose(a[n0 : n0 + n1], b[len(other[0]) : len(other[0]) + n1])
    # Without seeding there is no cross-sentence signal at all.
    plain = tiny(use_memory=False, context_seeding=False)
    model = build(plain).eval()
    a, b = plain.score(model, [doc, other], VOCAB)
    assert torch.allclose(a[n0:], b[len(other[0]) :], atol=1e-6)


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


# -- memory addressing, the gate, and each ablation's semantics -----------------------------------


def test_rank_encoding_is_unit_norm_on_keys_only_oldest_first_after_eviction():
    adapter = tiny(memory_slots=2)
    model = build(adapter).eval()
    assert torch.allclose(model.rank_pe.norm(dim=-1), torch.ones(2))
    batch = one_stream(adapter, make_doc(np.random.default_rng(21), 5))
    reader = model.readers[0]
    seen = []
    reader.register_forward_hook(lambda mod, args, out: seen.append(args[2]))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    keys, values = seen[-1]  # what step 4 read: sentences 2 and 3, sentences 0-1 evicted
    m2, m3 = out["vectors"][2], out["vectors"][3]
    pe = model.rank_pe
    expected_keys = torch.stack([reader.k(m2) + reader.k.weight @ pe[0], reader.k(m3) + reader.k.weight @ pe[1]], 1)
    assert torch.allclose(keys, expected_keys, atol=1e-6)  # rank 0 = the oldest slot still held
    assert torch.allclose(values, torch.stack([reader.v(m2), reader.v(m3)], 1), atol=1e-6)  # values raw


def test_gate_starts_at_one_is_not_decayed_and_scales_the_output():
    from tgbench.plan.config import RunConfig
    from tgbench.training.optim import make_optimizer

    adapter = tiny()
    model = build(adapter)
    gates = [m.gate for m in model.modules() if isinstance(m, CrossAttention)]
    assert gates and all(g.item() == 1.0 for g in gates)
    optimizer = make_optimizer(model, RunConfig())
    no_decay = next(g for g in optimizer.param_groups if g["weight_decay"] == 0.0)["params"]
    assert all(any(g is p for p in no_decay) for g in gates)
    decayed = next(g for g in optimizer.param_groups if g["weight_decay"] > 0)["params"]
    assert not any(g is p for g in gates for p in decayed)

    cross = model.readers[0].eval()
    n = 4
    step = StepInputs(ids=torch.zeros(n, dtype=torch.long), pos=torch.arange(n), grid_index=torch.arange(n),
                      stream=torch.zeros(n, dtype=torch.long), bos_rows=torch.zeros(1, dtype=torch.long),
                      eos_rows=torch.full((1,), n - 1), n_streams=1, max_len=n)
    x, memory = torch.randn(n, 32), (torch.randn(1, 3, 32), torch.randn(1, 3, 32))
    with torch.no_grad():
        base = cross(x, step, memory)
        cross.gate.fill_(2.5)
        assert torch.allclose(cross(x, step, memory), 2.5 * base, atol=1e-6)
        cross.gate.zero_()
        assert torch.equal(cross(x, step, memory), torch.zeros_like(base))


def _reference_prefix_step(model, tokens, vectors, seed):
    """A plain causal transformer over [m_1 + p_1, ..., m_K + p_K, seed tokens [EOS]] (one stream)."""
    K = len(vectors)
    ids = torch.tensor([VOCAB.bos_id, *tokens, VOCAB.eos_id])
    embedded = model.wte(ids)
    embedded[0] = seed  # context seeding: the last sentence vector in place of [BOS]
    x = torch.cat([vectors + model.memory_wpe.weight[:K], embedded + model.wpe(torch.arange(len(ids)))])
    for block in model.blocks:
        for attn, norm in zip(block.attns, block.norms, strict=True):
            q, k, v = attn.qkv(norm(x))[None].split(x.shape[-1], dim=-1)
            q, k, v = (t.view(1, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2) for t in (q, k, v))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + attn.proj(y.transpose(1, 2).reshape(-1, x.shape[-1]))
        x = x + block.mlp(block.ln_mlp(x))
    return x[K:]


def test_prefix_memory_is_prepended_tokens_through_every_self_attention_block():
    adapter = tiny(memory_mode="prefix", layers=3, memory_slots=3)
    model = build(adapter).eval()
    assert all(kind == "S" for kind in adapter.config.block_kinds()) and not model.readers
    assert model.memory_wpe.num_embeddings == 3
    doc = make_doc(np.random.default_rng(22), 5)
    batch = one_stream(adapter, doc)
    outputs = []
    original_step = model.step
    model.step = lambda step, memory, write=True: outputs.append(memory) or original_step(step, memory, write)
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    memory_before_last = outputs[-1]
    expected_vectors = torch.stack([out["vectors"][j][0] for j in (1, 2, 3)])  # FIFO of 3, oldest first
    assert torch.allclose(memory_before_last.vectors[0], expected_vectors, atol=1e-6)
    # The last sentence's final rows equal a plain causal transformer over memory tokens + sentence.
    last = adapter.units(doc, VOCAB)[-1].tolist()
    with torch.no_grad():
        reference = _reference_prefix_step(model, last, expected_vectors, memory_before_last.seed[0])
        rows = original_step(_single_step(last, model), memory_before_last)[0]
    assert torch.allclose(rows, reference, atol=1e-5)
    # Learned memory positions get gradients; a prefix model trains end to end.
    model.train()
    model.step = original_step
    loss = adapter.loss(model, batch, epoch=0).loss
    loss.backward()
    assert model.memory_wpe.weight.grad.abs().sum() > 0


def _single_step(tokens, model):
    ids = torch.tensor([VOCAB.bos_id, *tokens, VOCAB.eos_id])
    n = len(ids)
    return StepInputs(ids=ids, pos=torch.arange(n), grid_index=torch.arange(n), stream=torch.zeros(n, dtype=torch.long),
                      bos_rows=torch.zeros(1, dtype=torch.long), eos_rows=torch.full((1,), n - 1), n_streams=1,
                      max_len=n)


@pytest.mark.parametrize("reduction", ["steps", "tokens"])
def test_loss_reduction_switch(reduction):
    adapter = tiny(loss_reduction=reduction, stream_start=10)
    model = build(adapter).eval()
    rng = np.random.default_rng(23)
    batch = adapter.batches([make_doc(rng, 4), make_doc(rng, 2)], VOCAB, batch_tokens=10**6, epoch=1,
                            rng=np.random.default_rng(0))[0].to("cpu")
    with torch.no_grad():
        loss = adapter.loss(model, batch, epoch=1).loss
        logits = model.lm_head(model.run(batch.tensors, batch.meta["steps"])["hidden"])
    targets = batch.tensors["targets"]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    weights = torch.where(targets == VOCAB.eos_id, 0.05, 1.0)
    if reduction == "tokens":
        expected = (nll * weights).sum() / weights.sum()
    else:
        step = torch.as_tensor(batch.meta["target_step"])
        expected = sum((nll * weights)[step == t].sum() / weights[step == t].sum() for t in range(int(step.max()) + 1))
    assert torch.isclose(loss, torch.as_tensor(expected, dtype=loss.dtype), rtol=1e-5)


@pytest.mark.parametrize("layer", [1, 2, "auto", "last"])
def test_sentence_vector_reads_the_named_block(layer):
    adapter = tiny(sentence_layer=layer)
    model = build(adapter).eval()
    block = adapter.config.sentence_block
    assert block == {1: 1, 2: 2, "auto": 2, "last": 4}[layer]  # round(7/12 * 4) = 2
    captured = []
    model.blocks[block - 1].register_forward_hook(lambda mod, args, out: captured.append(out))
    batch = one_stream(adapter, make_doc(np.random.default_rng(24), 2))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    eos = int(batch.tensors["eos_rows"][0])
    assert torch.allclose(out["vectors"][0][0], model.w_sent(captured[0][eos]), atol=1e-6)


def test_last_layer_read_after_final_norm_switch():
    adapter = tiny(sentence_layer="last", sentence_after_final_norm=True)
    model = build(adapter).eval()
    captured = []
    model.blocks[-1].register_forward_hook(lambda mod, args, out: captured.append(out))
    batch = one_stream(adapter, make_doc(np.random.default_rng(25), 2))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    eos = int(batch.tensors["eos_rows"][0])
    assert torch.allclose(out["vectors"][0][0], model.w_sent(model.ln_f(captured[0][eos])), atol=1e-6)


@pytest.mark.parametrize("content_only", [False, True])
def test_mean_pool(content_only):
    adapter = tiny(sentence_pool="mean", mean_pool_content_only=content_only)
    model = build(adapter).eval()
    captured = []
    model.blocks[adapter.config.sentence_block - 1].register_forward_hook(lambda mod, args, out: captured.append(out))
    doc = make_doc(np.random.default_rng(26), 2)
    batch = one_stream(adapter, doc)
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    rows = captured[0][: len(doc[0]) + 2]  # [BOS] tokens [EOS] of sentence 0
    pooled = rows[1:-1].mean(0) if content_only else rows.mean(0)
    assert torch.allclose(out["vectors"][0][0], model.w_sent(pooled), atol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
def test_sentence_norm_hinge(squared):
    adapter = tiny(sentence_norm=True, sentence_norm_squared_hinge=squared, sentence_norm_penalty=0.5)
    model = build(adapter).eval()
    with torch.no_grad():
        model.w_sent.weight.mul_(100.0)  # norms far above 1.1
    batch = one_stream(adapter, make_doc(np.random.default_rng(27), 3))
    captured = []
    model.w_sent.register_forward_hook(lambda mod, args, out: captured.append(out))
    with torch.no_grad():
        out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    norms = torch.cat([c.norm(dim=-1) for c in captured])
    hinge = torch.relu(norms - 1.1) + torch.relu(0.9 - norms)
    expected = 0.5 * (hinge.square() if squared else hinge).sum()
    assert torch.isclose(out["penalty"], expected, rtol=1e-4)
    assert all(torch.allclose(v.norm(dim=-1), torch.ones(1)) for v in out["vectors"])


def test_parallel_norms_switch():
    shared, separate = tiny(block_pattern="P"), tiny(block_pattern="P", parallel_norms=True)
    assert len(build(shared).blocks[0].norms) == 1
    model = build(separate).eval()
    assert len(model.blocks[0].norms) == 2
    seen = []
    for attn in model.blocks[0].attns:
        attn.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    doc = make_doc(np.random.default_rng(28), 2)
    with torch.no_grad():
        model.blocks[0].norms[1].weight.fill_(3.0)
        separate.score(model, [doc], VOCAB)
    assert torch.allclose(seen[-1], 3.0 * seen[-2], atol=1e-5)  # the cross branch reads its own norm


def test_token_and_sentence_dropout_switches():
    adapter = tiny(token_dropout=0.5, sentence_dropout=0.5)
    model = build(adapter).train()
    inputs = []
    model.drop.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    batch = one_stream(adapter, make_doc(np.random.default_rng(29), 6, mean_len=10))
    torch.manual_seed(0)
    out = model.run(batch.tensors, batch.meta["steps"], keep_vectors=True)
    zero_rows = sum(int((x.abs().sum(-1) == 0).sum()) for x in inputs)
    assert zero_rows > 0  # whole token rows dropped
    assert out["memory"].keys[0].shape[1] > 0
    model.eval()
    inputs.clear()
    with torch.no_grad():
        model.run(batch.tensors, batch.meta["steps"])
    assert sum(int((x.abs().sum(-1) == 0).sum()) for x in inputs) == 0


def test_span_adapter_turns_context_seeding_off():
    adapter = TGSpanAdapter(width=32, layers=2, heads=2, span_tokens=4, dropout=0.0, attention_dropout=0.0)
    assert adapter.config.context_seeding is False
    model = adapter.build(VOCAB).eval()
    inputs = []
    model.drop.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    batch = stream_batch([adapter.units(make_doc(np.random.default_rng(30), 3), VOCAB)], VOCAB).to("cpu")
    with torch.no_grad():
        model.run(batch.tensors, batch.meta["steps"])
    bos = model.wte.weight[VOCAB.bos_id] + model.wpe.weight[0]
    assert all(torch.allclose(x[0], bos) for x in inputs)


def test_sentence_head_dropout_acts_between_the_heads_norm_and_linear_in_training_only():
    """The release's form: LayerNorm -> dropout -> Linear -> L2 norm (sentence_dropout acts on the written vector)."""
    adapter = tiny(sentence_head_dropout=0.5, dropout=0.0, attention_dropout=0.0)
    model = build(adapter).train()
    inputs = []
    model.w_sent.register_forward_hook(lambda mod, args, out: inputs.append(args[0]))
    batch = one_stream(adapter, make_doc(np.random.default_rng(31), 4, mean_len=8))
    torch.manual_seed(0)
    model.run(batch.tensors, batch.meta["steps"])
    dropped = sum(int((x == 0).sum()) for x in inputs)
    total = sum(x.numel() for x in inputs)
    assert 0.3 < dropped / total < 0.7  # about half of the normalised entries, the rest rescaled
    model.eval()
    inputs.clear()
    with torch.no_grad():
        model.run(batch.tensors, batch.meta["steps"])
    assert sum(int((x == 0).sum()) for x in inputs) == 0
    import dataclasses

    from tgbench.plan.config import RunConfig
    from tgbench.registry import resolved

    new = resolved(RunConfig(model="tg", model_options={"width": 32, "layers": 2}))
    old = dataclasses.replace(new, model_options={k: v for k, v in new.model_options.items()
                                                  if k != "sentence_head_dropout"})  # a config.toml from before it
    assert "sentence_head_dropout" in new.model_options and old.hash() == new.hash()  # finished runs are not retrained
    on = dataclasses.replace(new, model_options={**new.model_options, "sentence_head_dropout": 0.15})
    assert on.hash() != new.hash()


@pytest.mark.parametrize("scaled", [True, False])
def test_scaled_residual_init_is_gpt2s_by_default_and_the_releases_when_off(scaled):
    """Default: every residual branch's output projection at N(0, 0.02 / sqrt(2L)); off: the cross-attention
    output and the SwiGLU down-projection at the release's N(0, 0.02) (paper.md section 7)."""
    from tgbench.plan.config import RunConfig
    from tgbench.registry import resolved

    torch.manual_seed(0)
    model = TGAdapter(TGConfig(width=256, layers=4, scaled_residual_init=scaled)).build(Vocab(base_size=100))
    branch = 0.02 / (2 * 4) ** 0.5  # 4 blocks S, C, S, C: one attention sub-layer and one SwiGLU each
    stds = {name: float(p.detach().std()) for name, p in model.named_parameters()
            if name.endswith(("proj.weight", ".o.weight", "w2.weight"))}
    assert {n.rsplit(".", 2)[-2] for n in stds} == {"proj", "o", "w2"}
    for name, std in stds.items():
        wanted = branch if scaled or name.endswith("proj.weight") else 0.02
        assert abs(std / wanted - 1) < 0.05, (name, std, wanted)
    new = resolved(RunConfig(model="tg", model_options={"width": 32, "layers": 2}))
    old = dataclasses.replace(new, model_options={k: v for k, v in new.model_options.items()
                                                  if k != "scaled_residual_init"})  # a config.toml from before it
    assert new.model_options["scaled_residual_init"] is True and old.hash() == new.hash()
