"""The faster training step changes no numbers: its pieces against the plain ones they replaced."""

from __future__ import annotations

import numpy as np
import torch

from tgbench.models.tg import TGAdapter
from tgbench.plan.config import RunConfig, TrainConfig
from tgbench.training.optim import make_optimizer


def test_foreach_adamw_updates_every_parameter_bit_for_bit_as_the_per_tensor_loop(tiny_corpus):
    adapter = TGAdapter(width=16, layers=2, heads=2, stream_start=4, memory_slots=4, dropout=0.0,
                        attention_dropout=0.0)
    batches = adapter.batches(tiny_corpus.splits["train"].documents(), tiny_corpus.vocab, batch_tokens=128, epoch=0,
                              rng=np.random.default_rng(0))[:3]
    config = RunConfig(train=TrainConfig(lr=3e-3))
    weights = {}
    for foreach in (True, False):
        torch.manual_seed(0)
        model = adapter.build(tiny_corpus.vocab)
        optimizer = make_optimizer(model, config)
        assert all(group["foreach"] is True for group in optimizer.param_groups)
        for group in optimizer.param_groups:
            group["foreach"] = foreach
        for batch in batches:
            adapter.loss(model, batch.to("cpu"), 0).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        weights[foreach] = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in weights[False].items():
        assert torch.equal(value, weights[True][key]), key


def test_cross_entropy_is_exact_where_the_target_probability_underflows_float32():
    import torch.nn.functional as F

    from tgbench.models.gpt2 import cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(5, 300)
    targets = torch.tensor([3, 7, 11, 0, -100])
    logits[0, 3] = -150.0  # p ~ e^-150: 0 in float32, the loss ~150 nats
    logits[1, 7] = -60.0  # p ~ e^-60 ~ 1e-26: a representable, imprecise float32
    logits.requires_grad_()
    ours = cross_entropy(logits, targets, ignore_index=-100)
    reference = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
    torch.testing.assert_close(ours, reference)
    assert torch.isfinite(ours).all() and ours[0] > 140 and ours[4] == 0
    weights = torch.rand(5)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits, retain_graph=True)
    (again,) = torch.autograd.grad((ours * weights).sum(), logits)  # the saved softmax is not consumed
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), logits)
    torch.testing.assert_close(grad_ours, grad_ref)
    assert torch.equal(grad_ours, again)
