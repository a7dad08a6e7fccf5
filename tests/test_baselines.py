"""GPT-2 + boundaries and GPT-2 + gist masking: same scored tokens as GPT-2, and the gist mask."""

import numpy as np
import torch

from tgbench.adapter import Vocab
from tgbench.models.gpt2 import GPT2Adapter, GPT2Config
from tgbench.models.gpt2_boundary import GPT2BoundaryAdapter, flatten_with_boundaries
from tgbench.models.gpt2_gist import GPT2GistAdapter, gist_mask

VOCAB = Vocab(base_size=30)
TINY = dict(width=16, layers=1, heads=2, context=24, dropout=0.0, attention_dropout=0.0)


def docs(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 30, size=int(rng.integers(2, 7))) for _ in range(int(rng.integers(2, 5)))]
            for _ in range(n)]


def test_every_baseline_scores_exactly_the_content_tokens_of_gpt2():
    documents = docs(n=4)
    counts = {}
    for cls in (GPT2Adapter, GPT2BoundaryAdapter, GPT2GistAdapter):
        torch.manual_seed(0)
        adapter = cls(GPT2Config(**TINY))
        model = adapter.build(VOCAB).eval()
        scores = adapter.score(model, documents, VOCAB)
        counts[cls.name] = [len(s) for s in scores]
        assert all(torch.isfinite(s).all() and (s <= 0).all() for s in scores)
        batches = adapter.batches(documents, VOCAB, batch_tokens=48, epoch=0, rng=np.random.default_rng(0))
        assert sum(b.lexical_tokens for b in batches) == sum(len(s) for d in documents for s in d)
    expected = [sum(len(s) for s in d) for d in documents]
    assert counts == {"gpt2": expected, "gpt2-boundary": expected, "gpt2-gist": expected}


def test_boundary_stream_layout():
    flat, ends = flatten_with_boundaries([[np.array([1, 2]), np.array([3])]], VOCAB)
    b, e, d = VOCAB.bos_id, VOCAB.eos_id, VOCAB.eod_id
    assert flat.tolist() == [b, 1, 2, e, b, 3, d, e]
    assert ends.tolist() == [False, False, False, True, False, False, False, True]


def test_boundary_score_equals_its_training_loss_on_one_block():
    torch.manual_seed(0)
    adapter = GPT2BoundaryAdapter(GPT2Config(**{**TINY, "context": 64}))
    model = adapter.build(VOCAB).eval()
    doc = docs(seed=3, n=1)[0]
    (batch,) = adapter.batches([doc], VOCAB, batch_tokens=64, epoch=0, rng=np.random.default_rng(0))
    with torch.no_grad():
        parts = adapter.loss(model, batch.to("cpu"), epoch=0)
    (score,) = adapter.score(model, [doc], VOCAB)
    assert torch.allclose(-score.sum(), parts.lexical_nll_sum, atol=1e-4)


def test_gist_mask_exposes_earlier_sentences_only_through_their_eos():
    b, e, d = VOCAB.bos_id, VOCAB.eos_id, VOCAB.eod_id
    ids = torch.tensor([[b, 1, 2, e, b, 3, 4, e, b, 5, d, e, b, 6]])
    mask = gist_mask(ids, VOCAB.base_size)[0, 0]
    query = 6  # token "4" in the second sentence
    assert mask[query].tolist() == [False, False, False, True, True, True, True] + [False] * 7
    query = 9  # token "5" in the third sentence sees both earlier [EOS]
    assert [j for j in range(14) if mask[query, j]] == [3, 7, 8, 9]
    query = 13  # a new document: nothing of the previous one
    assert [j for j in range(14) if mask[query, j]] == [12, 13]
    # The release-style switch: earlier documents' [EOS] stay visible, their other tokens do not.
    crossing = gist_mask(ids, VOCAB.base_size, cross_document=True)[0, 0]
    assert [j for j in range(14) if crossing[query, j]] == [3, 7, 11, 12, 13]
    assert torch.equal(crossing[:12, :12], mask[:12, :12])
    assert GPT2GistAdapter().config.cross_document is False


def test_gist_gradients_reach_an_earlier_sentence_only_through_its_eos():
    torch.manual_seed(0)
    adapter = GPT2GistAdapter(GPT2Config(**TINY))  # one layer: no indirect path through the EOS state
    model = adapter.build(VOCAB)
    b, e = VOCAB.bos_id, VOCAB.eos_id
    ids = torch.tensor([[b, 1, 2, e, b, 3, 4]])
    embeddings = model.wte(ids).detach().requires_grad_(True)
    hidden = embeddings + model.wpe(torch.arange(7))
    for block in model.blocks:
        hidden = block(hidden, adapter.attention_mask(ids, VOCAB.base_size))
    hidden[0, 6].sum().backward()
    grad = embeddings.grad[0].abs().sum(-1)
    assert grad[3] > 0 and grad[4:].gt(0).all()
    assert torch.all(grad[:3] == 0)
