"""Device resolution on CUDA, checked without a GPU by standing in for torch.cuda's calls."""

import torch

from tgbench import devices


def test_cuda_without_an_index_is_set_as_the_current_gpu(monkeypatch):
    # torch >= 2.11 raises on torch.cuda.set_device(torch.device("cuda")): the device must carry an index.
    seen = []

    def set_device(device):
        if device.index is None:
            raise ValueError("Expected a torch.device with a specified index")
        seen.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)
    assert seen == [torch.device("cuda", 0)] * 3
