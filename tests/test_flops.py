"""Training FLOPs: every built-in adapter's analytic count against torch's FlopCounterMode, and the fallback.

The cross-check runs one forward of real batches (the adapter's own `batches` over a tiny synthetic corpus)
through `adapter.loss` under FlopCounterMode. On the CPU FlopCounterMode does not see
`F.scaled_dot_product_attention` (its fused CPU kernel is not registered), so the forward runs with SDPA on its
math path (`tgbench.training.flops.decomposed_kernels`: `sdpa_kernel(SDPBackend.MATH)`), where both attention
products are plain batched matmuls the counter counts, over the whole grid as the adapters' formulas do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tgbench import registry
from tgbench.adapter import TRAIN_FLOPS_PER_FORWARD, Adapter, Vocab
from tgbench.models.gpt2 import GPT2Adapter
from tgbench.models.gpt2_boundary import GPT2BoundaryAdapter
from tgbench.models.gpt2_gist import GPT2GistAdapter
from tgbench.models.rmt import RMTAdapter
from tgbench.models.tg import TGAdapter, TGSpanAdapter
from tgbench.models.txl import TXLAdapter
from tgbench.training.flops import (
    COUNTED,
    MEASURED,
    BatchFlops,
    batch_flops,
    decomposed_kernels,
    measured_forward_flops,
)
from tgbench.training.trainer import TrainState, compute_summary

VOCAB = Vocab(base_size=100)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lstm_adapter.py"
TINY = dict(width=32, layers=3, heads=2, dropout=0.0, attention_dropout=0.0)
STREAMS = dict(TINY, max_sentence_tokens=12)

# name -> (adapter class, settings): every built-in, and every TG block pattern and memory mode.
CASES = {
    "gpt2": (GPT2Adapter, dict(TINY, context=32)),
    "gpt2-boundary": (GPT2BoundaryAdapter, dict(TINY, context=32)),
    "gpt2-gist": (GPT2GistAdapter, dict(TINY, context=32)),
    "tg": (TGAdapter, dict(STREAMS, memory_slots=2)),
    "tg-SC": (TGAdapter, dict(STREAMS, block_pattern="SC", memory_slots=2)),
    "tg-CS": (TGAdapter, dict(STREAMS, block_pattern="CS")),
    "tg-P": (TGAdapter, dict(STREAMS, block_pattern="P", parallel_norms=True, memory_slots=3)),
    "tg-prefix": (TGAdapter, dict(STREAMS, memory_mode="prefix", memory_slots=2)),
    "tg-prefix-P": (TGAdapter, dict(STREAMS, memory_mode="prefix", block_pattern="P")),
    "tg-no-memory": (TGAdapter, dict(STREAMS, use_memory=False)),
    "tg-sentence-norm": (TGAdapter, dict(STREAMS, sentence_norm=True, sentence_pool="mean")),
    "tg-span": (TGSpanAdapter, dict(STREAMS, span_tokens=5, memory_slots=3)),
    "rmt": (RMTAdapter, dict(STREAMS, memory_tokens=3)),
    "rmt-span": (RMTAdapter, dict(STREAMS, memory_tokens=2, segment="span", span_tokens=6)),
    "txl": (TXLAdapter, dict(STREAMS, memory_tokens=16)),  # shorter than a stream: the cache is cut
    "txl-no-cache": (TXLAdapter, dict(STREAMS, memory_tokens=0)),
}


def documents(n_docs: int = 10, seed: int = 0) -> list[list[np.ndarray]]:
    """Documents of 3-8 sentences of random content ids, a few longer than the 12-token sentence cap."""
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, VOCAB.base_size, size=1 + rng.poisson(6)) for _ in range(int(rng.integers(3, 9)))]
            for _ in range(n_docs)]


def tiny_batches(adapter: Adapter, n: int = 2):
    batches = adapter.batches(documents(), VOCAB, batch_tokens=120, epoch=0, rng=np.random.default_rng(0))
    return batches[:n]


def build(adapter: Adapter) -> torch.nn.Module:
    torch.manual_seed(0)
    return adapter.build(VOCAB).train()


@pytest.mark.parametrize("case", CASES)
def test_counted_forward_flops_match_flop_counter_mode(case):
    cls, settings = CASES[case]
    adapter = cls(cls.config_class(**settings))
    model = build(adapter)
    for batch in tiny_batches(adapter):
        counted = adapter.train_flops(model, batch)
        measured = measured_forward_flops(adapter, model, batch)
        assert measured > 0
        assert counted / TRAIN_FLOPS_PER_FORWARD == pytest.approx(measured, rel=0.02), case
        assert batch_flops(adapter, model, batch) == (counted, COUNTED)


@pytest.mark.parametrize("case", [*CASES, "tg-checkpointed"])
def test_counted_training_flops_match_a_measured_forward_and_backward(case):
    """3 x forward is the backward's 2 matmuls per forward matmul: within 2% where an operand needs no gradient
    (TG's rank encodings); checkpointed steps run their forward again in the backward."""
    cls, settings = CASES.get(case, (TGAdapter, dict(STREAMS, checkpoint_steps=True)))
    adapter = cls(cls.config_class(**settings))
    model = build(adapter)
    batch = tiny_batches(adapter, 1)[0]
    with decomposed_kernels(), FlopCounterMode(display=False) as counter:
        adapter.loss(model, batch.to("cpu"), 0).loss.backward()
    assert adapter.train_flops(model, batch) == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_the_measurement_leaves_the_model_and_the_rng_as_they_were():
    adapter = TGAdapter(TGAdapter.config_class(**dict(STREAMS, dropout=0.1)))
    model = build(adapter)
    state = torch.get_rng_state()
    measured_forward_flops(adapter, model, tiny_batches(adapter, 1)[0])
    assert model.training
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.backends.mkldnn.enabled


def test_a_plugin_without_train_flops_gets_a_measured_estimate():
    cls = registry.get_adapter_class(f"{EXAMPLE}:LSTMAdapter")
    adapter = cls(cls.config_class(width=16, layers=1, context=16))
    model = build(adapter)
    batches = adapter.batches(documents(), VOCAB, batch_tokens=64, epoch=0, rng=np.random.default_rng(0))
    flops, method = batch_flops(adapter, model, batches[0])
    B, T = batches[0].tensors["inputs"].shape
    d, V = 16, VOCAB.size
    lstm = 2 * B * T * (d * 4 * d) * 2  # input and recurrent products of the four gates
    assert method == MEASURED
    assert flops == pytest.approx(TRAIN_FLOPS_PER_FORWARD * (lstm + 2 * B * T * d * V), rel=0.02)

    counter = BatchFlops(adapter, model)
    total = sum(counter(b) for b in batches)
    assert counter.method == MEASURED
    assert len(counter.measured) == len({b.tensors["inputs"].shape for b in batches})  # once per shape
    assert total == pytest.approx(sum(batch_flops(adapter, model, b)[0] for b in batches))


def test_a_counting_adapter_is_never_measured():
    adapter = GPT2Adapter(GPT2Adapter.config_class(**dict(TINY, context=32)))
    counter = BatchFlops(adapter, build(adapter))
    for batch in tiny_batches(adapter):
        counter(batch)
    assert counter.method == COUNTED and not counter.measured


def test_the_running_sums_survive_a_checkpoint_and_older_checkpoints_leave_them_unknown():
    state = TrainState(step=3, tokens=300, flops=9e6, flops_method=MEASURED, train_seconds=1.5)
    again = TrainState.from_dict(state.to_dict())
    assert (again.flops, again.flops_method, again.train_seconds) == (9e6, MEASURED, 1.5)
    assert compute_summary(again, 1000) == {"train_flops": 9e6, "flops_per_token": 3e4, "flops_method": MEASURED,
                                            "train_seconds": 1.5, "flops_6nd": 6 * 1000 * 300}
    older = TrainState.from_dict({"step": 3, "epoch": 0, "batch": 3, "tokens": 300})  # written before the sums
    assert older.flops is None and older.train_seconds is None
    assert compute_summary(older, 1000)["train_flops"] is None
