"""GPT-2: parity with transformers' reference, batching, scoring."""

import numpy as np
import pytest
import torch

from tgbench.adapter import Vocab
from tgbench.models.gpt2 import GPT2Adapter, GPT2Config, hf_state_dict

transformers = pytest.importorskip("transformers")


def tiny(**overrides):
    settings = dict(width=32, layers=2, heads=4, context=16, dropout=0.0, attention_dropout=0.0)
    settings.update(overrides)
    return GPT2Adapter(GPT2Config(**settings))


def random_documents(rng, n_docs=4, vocab=50):
    return [[rng.integers(0, vocab, size=int(rng.integers(3, 9))) for _ in range(int(rng.integers(2, 5)))]
            for _ in range(n_docs)]


def test_logits_match_transformers_gpt2():
    torch.manual_seed(0)
    vocab = Vocab(base_size=60)
    adapter = tiny()
    ours = adapter.build(vocab).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor shows
        for name, p in ours.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    config = transformers.GPT2Config(
        vocab_size=vocab.size, n_positions=16, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
    )
    reference = transformers.GPT2LMHeadModel(config).eval()
    missing, unexpected = reference.load_state_dict(hf_state_dict(ours), strict=False)
    assert not unexpected and all("attn.bias" in m or "masked_bias" in m for m in missing)
    ids = torch.randint(0, vocab.size, (3, 16))
    with torch.no_grad():
        diff = (ours(ids) - reference(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_block_batches_keep_every_token_and_count_lexical_targets():
    rng = np.random.default_rng(0)
    vocab = Vocab(base_size=50)
    docs = random_documents(rng)
    adapter = tiny()
    batches = adapter.batches(docs, vocab, batch_tokens=32, epoch=0, rng=rng)
    content = sum(len(s) for d in docs for s in d)
    assert sum(b.lexical_tokens for b in batches) == content
    assert sum(b.sentences for b in batches) == sum(len(d) for d in docs)
    targets = np.concatenate([b.tensors["targets"].ravel() for b in batches])
    kept = targets[targets >= 0]
    assert (kept == vocab.eod_id).sum() == len(docs) - 1  # the first [EOD] is an input, never a target


def test_score_equals_training_loss_on_the_same_text():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    vocab = Vocab(base_size=50)
    adapter = tiny(context=64)
    model = adapter.build(vocab).eval()
    doc = random_documents(rng, n_docs=1)[0]
    (batch,) = adapter.batches([doc], vocab, batch_tokens=64, epoch=0, rng=rng)
    with torch.no_grad():
        parts = adapter.loss(model, batch.to("cpu"), epoch=0)
    (logprobs,) = adapter.score(model, [doc], vocab)
    assert len(logprobs) == sum(len(s) for s in doc)
    assert torch.allclose(-logprobs.sum(), parts.lexical_nll_sum, atol=1e-4)


def test_rolling_score_covers_long_documents_with_any_stride():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    vocab = Vocab(base_size=50)
    doc = [rng.integers(0, 50, size=20) for _ in range(3)]  # 60 tokens, context 16
    for stride in (16, 4):
        adapter = tiny(score_stride=stride)
        model = adapter.build(vocab).eval()
        (logprobs,) = adapter.score(model, [doc], vocab)
        assert logprobs.shape == (60,) and torch.isfinite(logprobs).all() and (logprobs < 0).all()


def test_generate_returns_content_tokens_and_stops():
    torch.manual_seed(0)
    vocab = Vocab(base_size=50)
    adapter = tiny()
    model = adapter.build(vocab).eval()
    out = adapter.generate(model, [np.array([1, 2, 3])], vocab, max_new_tokens=20)
    assert len(out) == 20 and all(0 <= t < 50 for t in out)
    stop_at = [out[2]]
    short = adapter.generate(model, [np.array([1, 2, 3])], vocab, max_new_tokens=20, stop=[stop_at])
    assert short[-1] == out[2] and len(short) <= 3


def test_non_embedding_parameter_count_of_the_matched_baseline():
    with torch.device("meta"):
        adapter = GPT2Adapter()
        model = adapter.build(Vocab(base_size=50257))
    assert abs(adapter.n_params(model) - 84.9e6) <= 0.2e6
