"""The segment-recurrent peers (rmt, txl): their memory mechanisms, TG's streams and scoring, options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tgbench.adapter import Vocab
from tgbench.core.errors import UserError
from tgbench.models.rmt import RMTAdapter, RMTConfig, memory_mask
from tgbench.models.segments import SegmentAdapter
from tgbench.models.streams import StepInputs, stream_batch
from tgbench.models.tg import TGAdapter
from tgbench.models.txl import TXLAdapter, TXLConfig
from tgbench.plan.config import RunConfig
from tgbench.registry import build_adapter

VOCAB = Vocab(base_size=100)
PEERS = (RMTAdapter, TXLAdapter)


def tiny(cls: type[SegmentAdapter], **overrides) -> SegmentAdapter:
    settings = dict(width=32, layers=2, heads=2, dropout=0.0, attention_dropout=0.0, max_sentence_tokens=12,
                    memory_tokens=4 if cls is RMTAdapter else 64)
    settings.update(overrides)
    return cls(cls.config_class(**settings))


def make_doc(rng: np.random.Generator, sentences: int, mean_len: float = 6.0) -> list[np.ndarray]:
    return [rng.integers(0, VOCAB.base_size, size=max(1, rng.poisson(mean_len))) for _ in range(sentences)]


def build(adapter, seed: int = 0):
    torch.manual_seed(seed)
    return adapter.build(VOCAB)


def embedding_grads(adapter, doc, loss_step: int) -> tuple[torch.Tensor, np.ndarray]:
    """Gradient of the NLL of sentence `loss_step` wrt every input embedding row of the one-stream batch."""
    model = build(adapter).train()
    batch = stream_batch([adapter.units(doc, VOCAB)], VOCAB).to("cpu")
    captured = []
    model.wte.register_forward_hook(lambda mod, args, out: captured.append(out))
    hidden = model.run(batch.tensors, batch.meta["steps"])["hidden"]
    chosen = torch.from_numpy(batch.meta["target_step"] == loss_step)
    nll = torch.nn.functional.cross_entropy(model.lm_head(hidden[chosen]), batch.tensors["targets"][chosen])
    (grad,) = torch.autograd.grad(nll, captured[0])
    row_step = np.repeat(np.arange(len(batch.meta["steps"])), [r1 - r0 for r0, r1, *_ in batch.meta["steps"]])
    return grad.abs().sum(dim=-1), row_step  # (N_total,) per input row, and the step of each row


# -- rmt: recurrence through memory tokens ---------------------------------------------------------


def test_rmt_loss_reaches_two_sentences_back_through_the_memory():
    doc = make_doc(np.random.default_rng(1), 5)
    grad, step_of = embedding_grads(tiny(RMTAdapter), doc, loss_step=3)
    for earlier in (0, 1, 2, 3):
        assert grad[torch.from_numpy(step_of == earlier)].sum() > 0, f"no gradient reaches sentence {earlier}"
    assert grad[torch.from_numpy(step_of == 4)].sum() == 0  # causal: a later sentence never feeds it


@pytest.mark.parametrize(("window", "reached"), [(1, {3}), (2, {2, 3}), (0, {0, 1, 2, 3})])
def test_rmt_bptt_window_truncates_the_gradient(window, reached):
    doc = make_doc(np.random.default_rng(1), 5)
    grad, step_of = embedding_grads(tiny(RMTAdapter, bptt_segments=window), doc, loss_step=3)
    for earlier in range(5):
        got = grad[torch.from_numpy(step_of == earlier)].sum()
        assert (got > 0) == (earlier in reached), (window, earlier, float(got))


def test_rmt_reads_memory_from_the_first_token_and_writes_from_every_token():
    adapter = tiny(RMTAdapter)
    model = build(adapter)
    ids = [VOCAB.bos_id, 5, 6, 7, VOCAB.eos_id]
    step = adapter._unit_step(ids[1:-1], VOCAB, torch.device("cpu"), complete=True)
    state = torch.randn(1, 4, 32, requires_grad=True)
    captured = []
    model.wte.register_forward_hook(lambda mod, args, out: captured.append(out))
    x, written, _, _ = model.step(step, type(model.empty_memory())(count=1, state=state))
    # Every segment row, [BOS] included, reads the memory (the read tokens come first).
    (g_state,) = torch.autograd.grad(x[0].sum(), state, retain_graph=True)
    assert g_state.abs().sum() > 0
    # The write tokens see every segment row, the closing [EOS] included.
    # (a plain sum of LayerNorm'd rows is constant: weigh each feature)
    weights = torch.randn(written.shape, generator=torch.Generator().manual_seed(0))
    (g_rows,) = torch.autograd.grad((written * weights).sum(), captured[0])
    assert (g_rows.abs().sum(dim=-1) > 0).all()
    # The learned initial memory is a parameter the first segment reads.
    x0 = model.step(step, model.empty_memory())[0]
    (g_init,) = torch.autograd.grad(x0.sum(), model.memory)
    assert g_init.abs().sum() > 0


def _two_streams(lengths=(3, 5)) -> StepInputs:
    """One step of two streams with segments of `lengths` rows, packed stream after stream."""
    T = max(lengths)
    pos = torch.cat([torch.arange(n) for n in lengths])
    stream = torch.cat([torch.full((n,), b) for b, n in enumerate(lengths)])
    starts = torch.tensor([0, lengths[0]])
    return StepInputs(ids=torch.full((sum(lengths),), 5), pos=pos, grid_index=stream * T + pos, stream=stream,
                      bos_rows=starts, eos_rows=starts + torch.tensor(lengths) - 1, n_streams=2, max_len=T)


@pytest.mark.parametrize("write", [True, False])
def test_rmt_mask_is_lm_rmts_read_read_and_write_write_unmasked(write):
    K, lengths = 2, (3, 5)
    mask = memory_mask(_two_streams(lengths), K, write)
    width = K + max(lengths) + (K if write else 0)
    assert mask.shape == (2, 1, width, width) and mask.dtype == torch.bool
    for b, n in enumerate(lengths):
        kind = ["read"] * K + ["seg"] * n + ["write"] * (K if write else 0)
        kind += ["pad"] * (width - len(kind))
        for i, ki in enumerate(kind):
            if ki == "pad":
                continue
            for j, kj in enumerate(kind):
                wanted = {"read": kj == "read",  # every read row, not only the earlier ones
                          "seg": kj == "read" or (kj == "seg" and j <= i),  # all reads, causal in the segment
                          "write": kj in ("read", "seg", "write")}[ki]  # everything but padding
                assert bool(mask[b, 0, i, j]) == wanted, (b, i, j, ki, kj)


def test_rmt_segment_tokens_never_see_the_write_rows_and_read_rows_see_each_other():
    adapter = tiny(RMTAdapter)
    model = build(adapter).eval()
    step = adapter._unit_step([5, 6, 7], VOCAB, torch.device("cpu"), complete=True)
    state = torch.randn(1, 4, 32)
    memory = type(model.empty_memory())(count=1, state=state)
    with torch.no_grad():
        with_write, _, _, _ = model.step(step, memory, write=True)
        without, _, _, _ = model.step(step, memory, write=False)
    assert torch.allclose(with_write, without, atol=1e-6)  # the write rows are invisible to the segment
    # the first read row sees the last one: the segment's first token changes when only the last read slot does
    causal = build(tiny(RMTAdapter, memory_mask="causal")).eval()
    changed = state.clone()
    changed[0, -1] += torch.randn(32)  # the last read slot only (not a constant shift, which LayerNorm removes)
    for net, sees in ((model, True), (causal, False)):
        first_read = []  # block 0's output of the first read row
        hook = net.blocks[0].register_forward_hook(lambda mod, args, out, into=first_read: into.append(out[0]))
        with torch.no_grad():
            for s in (state, changed):
                net.step(step, type(memory)(count=1, state=s), write=False)
        hook.remove()
        assert (not torch.allclose(first_read[0], first_read[1])) == sees


@pytest.mark.parametrize(("norm", "ratio"), [("scaled", (0.8, 1.25)), ("final", (40, 60))])
def test_rmt_written_memory_is_ln_fs_or_at_the_token_embeddings_norm(norm, ratio):
    """final (the reference's ln_f): rows of norm ~sqrt(d), 50x a token embedding's 0.02 sqrt(d); scaled: the
    memory's own LayerNorm starts its gain at 0.02, so read rows start at the scale of the token rows beside them.
    The learned initial memory starts at the embeddings' scale either way."""
    adapter = tiny(RMTAdapter, memory_norm=norm, width=64, heads=2)
    model = build(adapter).eval()
    batch = stream_batch([adapter.units(make_doc(np.random.default_rng(8), 3), VOCAB)], VOCAB).to("cpu")
    with torch.no_grad():
        written = model.run(batch.tensors, batch.meta["steps"])["memory"].state  # (1, K, d)
        tokens = model.wte.weight.norm(dim=-1).mean()
        initial = model.memory.norm(dim=-1).mean()
    assert ratio[0] < float(written.norm(dim=-1).mean() / tokens) < ratio[1]
    assert 0.8 < float(initial / tokens) < 1.25  # the learned initial memory, either way


@pytest.mark.parametrize("options", [{"memory_mask": "causal"}, {"memory_norm": "scaled"}, {"bptt_segments": 2}])
def test_rmt_other_forms_train(options):
    adapter = tiny(RMTAdapter, stream_start=5, **options)
    model = build(adapter).train()
    docs = [make_doc(np.random.default_rng(12), 6) for _ in range(2)]
    batch = adapter.batches(docs, VOCAB, batch_tokens=150, epoch=0, rng=np.random.default_rng(0))[0]
    parts = adapter.loss(model, batch.to("cpu"), epoch=0)
    parts.loss.backward()
    assert torch.isfinite(parts.loss) and (model.ln_mem is None) == (options.get("memory_norm") != "scaled")


def test_an_rmt_run_from_before_the_mask_option_reads_back_causal_and_is_retrained(tmp_path):
    """config.toml records every option; one without memory_mask was trained with the causal mask, so it loads
    causal (its checkpoint's numbers) and hashes as before, and a grid asking for today's default retrains it."""
    from tgbench.registry import resolved
    from tgbench.training.rundir import RunDir

    new = resolved(RunConfig(model="rmt", model_options={"width": 32, "layers": 2}))
    assert new.model_options["memory_mask"] == "full" and new.model_options["memory_norm"] == "final"
    old = dataclasses.replace(new, model_options={k: v for k, v in new.model_options.items()
                                                  if k not in ("memory_mask", "memory_norm")})
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_config(old, {"label": "rmt"})
    back = run.read_config()
    assert back.model_options["memory_mask"] == "causal" and back.model_options["memory_norm"] == "final"
    assert resolved(back).hash() == old.hash() != new.hash()
    assert build_adapter(back).config.memory_mask == "causal"


# -- txl: a detached cache ------------------------------------------------------------------------


def test_txl_no_gradient_across_segments_but_the_previous_segment_changes_the_logits():
    doc = make_doc(np.random.default_rng(2), 3)
    grad, step_of = embedding_grads(tiny(TXLAdapter), doc, loss_step=2)
    assert grad[torch.from_numpy(step_of == 2)].sum() > 0
    assert grad[torch.from_numpy(step_of != 2)].sum() == 0

    adapter = tiny(TXLAdapter)
    model = build(adapter).eval()
    changed = [doc[0], (doc[1] + 1) % VOCAB.base_size, doc[2]]
    last = slice(-len(doc[2]), None)
    with torch.no_grad():
        before, after = (adapter.score(model, [d], VOCAB)[0] for d in (doc, changed))
    assert not torch.allclose(before[last], after[last])
    assert torch.equal(before[: len(doc[0])], after[: len(doc[0])])  # earlier segments never see later ones


def test_txl_with_an_unbounded_cache_equals_one_causal_pass_over_the_stream():
    """Earlier segments' cached layer inputs, projected at relative rotary positions = full causal attention."""
    adapter = tiny(TXLAdapter, layers=3, memory_tokens=1000)
    model = build(adapter).eval()
    units = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    device = torch.device("cpu")
    with torch.no_grad():
        memory, pieces = model.empty_memory(), []
        for unit in units:
            x, _, memory, _ = model.step(adapter._unit_step(unit, VOCAB, device, True), memory)
            pieces.append(x)
        full = model.step(_whole_stream(units), model.empty_memory(), write=False)[0]
    assert torch.allclose(torch.cat(pieces), full, atol=1e-5)


def _whole_stream(units):
    ids = [t for u in units for t in [VOCAB.bos_id, *u, VOCAB.eos_id]]
    n = len(ids)
    return StepInputs(ids=torch.tensor(ids), pos=torch.arange(n), grid_index=torch.arange(n),
                      stream=torch.zeros(n, dtype=torch.long), bos_rows=torch.zeros(1, dtype=torch.long),
                      eos_rows=torch.tensor([n - 1]), n_streams=1, max_len=n)


def test_txl_key_value_weights_learn_through_the_cached_positions():
    """The cache holds layer inputs (detached) and each step projects them with the current weights, as
    Transformer-XL does: with one layer the cached inputs are the embeddings themselves, so a loss on the
    second segment gives every block weight (the LayerNorm and key/value projections included) the gradient
    of one causal pass over both segments; only the first segment's embeddings get none."""
    adapter = tiny(TXLAdapter, layers=1, memory_tokens=1000)
    model = build(adapter).train()  # dropout 0: train mode changes nothing but the autograd path
    units = [[5, 6, 7, 8], [9, 10, 11]]
    device = torch.device("cpu")
    weights = torch.randn(len(units[1]) + 2, 32, generator=torch.Generator().manual_seed(0))

    def block_grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("blocks.")}

    _, _, cache, _ = model.step(adapter._unit_step(units[0], VOCAB, device, True), model.empty_memory())
    second = model.step(adapter._unit_step(units[1], VOCAB, device, True), cache)[0]
    segmented = block_grads((second * weights).sum())
    full = model.step(_whole_stream(units), model.empty_memory(), write=False)[0]
    whole = block_grads((full[len(units[0]) + 2:] * weights).sum())
    assert segmented.keys() == whole.keys()
    for name in segmented:
        assert torch.allclose(segmented[name], whole[name], atol=1e-6), name
    # the key/value rows of the projection get a part of their gradient from the cached positions only
    alone = model.step(adapter._unit_step(units[1], VOCAB, device, True), model.empty_memory())[0]
    kv_alone = block_grads((alone * weights).sum())["blocks.0.attn.qkv.weight"][32:]
    assert not torch.allclose(kv_alone, segmented["blocks.0.attn.qkv.weight"][32:], atol=1e-4)


@pytest.mark.parametrize(("extra", "sees_first"), [(0, False), (1, False), (2, True)])
def test_txl_cache_keeps_exactly_memory_tokens_rows(extra, sees_first):
    """One layer: segment 3 reads the cached rows only, so a change in segment 1 shows iff it is in the cache.

    With one layer a cached row's key and value come from its own token alone; segment 1's last row
    is its [EOS], unchanged by the edit, so its last content token enters with 2 extra rows.
    """
    rng = np.random.default_rng(3)
    doc = make_doc(rng, 3)
    adapter = tiny(TXLAdapter, layers=1, memory_tokens=len(doc[1]) + 2 + extra)  # + [BOS] [EOS]
    model = build(adapter).eval()
    changed = [(doc[0] + 1) % VOCAB.base_size, doc[1], doc[2]]
    before, after = (adapter.score(model, [d], VOCAB)[0][-len(doc[2]):] for d in (doc, changed))
    assert torch.allclose(before, after) != sees_first


# -- both: TG's streams, scoring and documents ----------------------------------------------------


@pytest.mark.parametrize("cls", PEERS)
def test_score_matches_training_loss_lexical_nll(cls):
    rng = np.random.default_rng(9)
    adapter = tiny(cls, max_sentence_tokens=8, curriculum=False, fixed_stream_sentences=1000)
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
        alone = adapter.score(model, [doc], VOCAB)[0]
        assert torch.allclose(alone, logp, atol=1e-5)  # batched with other documents or alone: the same


@pytest.mark.parametrize("cls", PEERS)
def test_memory_resets_between_documents(cls):
    rng = np.random.default_rng(4)
    adapter = tiny(cls)
    model = build(adapter).eval()
    first, second = make_doc(rng, 6), make_doc(rng, 3)
    other = [(s + 1) % VOCAB.base_size for s in first]  # same lengths, other tokens
    scored = adapter.score(model, [first, second], VOCAB)[1]
    assert torch.allclose(scored, adapter.score(model, [other, second], VOCAB)[1], atol=1e-6)
    # The same in a training batch: two documents' streams side by side never mix.
    batch = adapter.batches([first, second], VOCAB, batch_tokens=10**6, epoch=0, rng=np.random.default_rng(0))[0]
    swapped = adapter.batches([other, second], VOCAB, batch_tokens=10**6, epoch=0, rng=np.random.default_rng(0))[0]
    with torch.no_grad():
        h1, h2 = (model.run(b.to("cpu").tensors, b.meta["steps"])["hidden"] for b in (batch, swapped))
    rows = torch.from_numpy(batch.meta["target_stream"] == 1)  # the 3-sentence document sorts second
    assert torch.allclose(h1[rows], h2[rows], atol=1e-6)
    # And the memory is carried inside a document: its second half scores differently on its own.
    whole = adapter.score(model, [first], VOCAB)[0]
    half = adapter.score(model, [first[3:]], VOCAB)[0]
    assert not torch.allclose(whole[-len(half):], half)


@pytest.mark.parametrize("cls", PEERS)
def test_streams_and_curriculum_are_tgs(cls):
    rng = np.random.default_rng(5)
    docs = [make_doc(rng, 11) for _ in range(3)]
    peer, tg = tiny(cls, stream_start=4, stream_step=2, stream_every=1), TGAdapter(
        width=32, layers=2, heads=2, max_sentence_tokens=12, stream_start=4, stream_step=2, stream_every=1)
    for epoch in (0, 2):
        args = dict(batch_tokens=60, epoch=epoch)
        mine = peer.batches(docs, VOCAB, rng=np.random.default_rng(7), **args)
        theirs = tg.batches(docs, VOCAB, rng=np.random.default_rng(7), **args)
        assert len(mine) == len(theirs) == peer.count_batches(docs, VOCAB, rng=np.random.default_rng(7), **args)
        for a, b in zip(mine, theirs, strict=True):
            assert a.meta["steps"] == b.meta["steps"]
            assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in b.tensors)


@pytest.mark.parametrize("cls", PEERS)
@pytest.mark.parametrize("overrides", [{}, {"segment": "span", "span_tokens": 5}, {"memory_tokens": 0},
                                       {"curriculum": False, "fixed_stream_sentences": 3},
                                       {"dropout": 0.1, "attention_dropout": 0.2}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_setting_trains_and_scores(cls, overrides):
    adapter = tiny(cls, stream_start=5, **overrides)
    model = build(adapter).train()
    rng = np.random.default_rng(11)
    docs = [make_doc(rng, 7) for _ in range(4)]
    batch = adapter.batches(docs, VOCAB, batch_tokens=150, epoch=1, rng=np.random.default_rng(0))[0]
    parts = adapter.loss(model, batch.to("cpu"), epoch=1)
    parts.loss.backward()
    assert torch.isfinite(parts.loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    assert len(adapter.score(model, docs[:1], VOCAB)[0]) == sum(len(s) for s in docs[0])
    if overrides.get("segment") == "span":
        assert all(len(u) <= 5 for u in adapter.units(docs[0], VOCAB))


@pytest.mark.parametrize("cls", PEERS)
def test_bf16_autocast_runs(cls):
    adapter = tiny(cls)
    model = build(adapter)
    batch = adapter.batches([make_doc(np.random.default_rng(6), 5)], VOCAB, batch_tokens=100, epoch=0,
                            rng=np.random.default_rng(0))[0].to("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = adapter.loss(model, batch, 0)
    parts.loss.backward()
    assert torch.isfinite(parts.loss)


@pytest.mark.parametrize("cls", PEERS)
def test_generate_continues_the_last_sentence_greedily(cls):
    adapter = tiny(cls)
    model = build(adapter, seed=3).eval()
    prompt = make_doc(np.random.default_rng(15), 3)
    first = adapter.generate(model, prompt, VOCAB, max_new_tokens=1)
    units = [*adapter.prompt_units(prompt[:-1]), np.append(prompt[-1], 0)]
    batch = stream_batch([units], VOCAB).to("cpu")
    with torch.no_grad():
        hidden = model.run(batch.tensors, batch.meta["steps"])["hidden"]
    logits = model.lm_head(hidden[len(batch.tensors["targets"]) - 2])  # the row predicting the appended token
    logits[VOCAB.pad_id] = logits[VOCAB.bos_id] = float("-inf")
    assert first == [int(logits.argmax())] or int(logits.argmax()) >= VOCAB.base_size
    longer = adapter.generate(model, prompt, VOCAB, max_new_tokens=20)
    assert len(longer) <= 20 and all(0 <= t < VOCAB.base_size for t in longer)


# -- parameters and options -----------------------------------------------------------------------


def test_parameter_counts_differ_from_tg_by_w_sent_and_the_memory():
    width, layers, k = 128, 4, 10
    with torch.device("meta"):
        tg = TGAdapter(width=width, layers=layers)
        rmt = RMTAdapter(width=width, layers=layers, memory_tokens=k)
        txl = TXLAdapter(width=width, layers=layers)
        n = {a.name: a.n_params(a.build(Vocab(8192))) for a in (tg, rmt, txl)}
    assert n["tg"] - n["txl"] == width * width + width + layers // 2  # W_sent and TG's gates
    assert n["rmt"] - n["txl"] == k * width  # the learned initial memory
    assert abs(n["rmt"] / n["tg"] - 1) < 0.02 and abs(n["txl"] / n["tg"] - 1) < 0.021
    with torch.device("meta"):  # at the paper's 12 x 768 both are well inside 2%
        paper = {a.name: a.n_params(a.build(Vocab(50257))) for a in (TGAdapter(), RMTAdapter(), TXLAdapter())}
    assert all(abs(paper[name] / paper["tg"] - 1) < 0.01 for name in ("rmt", "txl"))


@pytest.mark.parametrize(("model", "options", "message"), [
    ("rmt", {"segment": "word"}, "segment = 'word' is unknown"),
    ("rmt", {"memory_tokens": -1}, "memory_tokens = -1 is negative"),
    ("rmt", {"bptt_segments": -2}, "bptt_segments = -2 is negative"),
    ("rmt", {"memory_mask": "none"}, "memory_mask = 'none' is unknown"),
    ("rmt", {"memory_norm": "ln_f"}, "memory_norm = 'ln_f' is unknown"),
    ("txl", {"width": 48, "heads": 16}, "odd"),
    ("txl", {"dropout": 1.5}, "not a probability"),
    ("txl", {"bptt_segments": 2}, "bptt_segments"),
    ("rmt", {"memory_tokens": "many"}, "memory_tokens"),
    ("txl", {"loss_reduction": "mean"}, "loss_reduction = 'mean' is unknown"),
])
def test_options_are_checked(model, options, message):
    with pytest.raises(UserError, match=message):
        build_adapter(RunConfig(model=model, model_options=options))


def test_defaults_are_tgs_where_shared():
    shared = {f.name for f in dataclasses.fields(RMTConfig)} & {f.name for f in dataclasses.fields(TXLConfig)}
    tg = TGAdapter().config
    for name in shared - {"memory_tokens", "segment", "span_tokens"}:
        assert getattr(RMTConfig(), name) == getattr(TXLConfig(), name) == getattr(tg, name), name
    assert RMTConfig().memory_tokens == 10 and TXLConfig().memory_tokens == 1024


# -- through the harness: train, summary, ppl with its context metrics ---------------------------


@pytest.fixture(scope="module")
def peer_runs(tmp_path_factory):
    from corpora import write_family_corpus

    from tgbench.plan.config import DataConfig, TrainConfig
    from tgbench.training.trainer import train

    root = tmp_path_factory.mktemp("peers")
    write_family_corpus(root / "wiki.txt", ["Anna", "Tom", "Mary", "John"], n_docs=30, per_doc=(3, 6))
    runs = {}
    for model, memory in (("rmt", 3), ("txl", 40)):
        config = RunConfig(
            model=model, model_options=dict(width=16, layers=2, heads=2, dropout=0.0, attention_dropout=0.0,
                                            memory_tokens=memory, stream_start=6),
            data=DataConfig(corpus=str(root / "wiki.txt"), tokenizer="bpe-300", splitter="blingfire",
                            cache_dir=str(root / "cache"), valid_fraction=0.1, test_fraction=0.15),
            train=TrainConfig(epochs=1, batch_tokens=256, eval_tokens=200, lr=3e-3, device="cpu", log_every=5),
        )
        runs[model] = train(config, root / model, progress=False).run_dir
    return runs


@pytest.mark.parametrize("model", ["rmt", "txl"])
def test_trains_and_scores_through_the_harness(peer_runs, model):
    from tgbench.evaluation.evaluate import eval_run
    from tgbench.results.table import collect_row

    status, path, results = eval_run(peer_runs[model], "ppl", device="cpu", progress=False)
    assert status == "done"
    metrics = results["results"]["ppl"]
    assert metrics["lexical_ppl"] > 1 and metrics["tokens"] > 0
    row = collect_row(peer_runs[model])
    if model == "rmt":  # every segment reads the K memory tokens
        assert metrics["memory_slots_per_sentence"] == 3.0 and row["memory_slots_train"] == 3.0
        assert "effective_context_tokens" not in metrics  # unbounded recurrence: not stated
    else:
        assert metrics["effective_context_tokens"] == 2 * 40.0 and "memory_slots_per_sentence" not in metrics
        assert row["memory_slots_train"] is None
