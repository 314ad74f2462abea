"""BatchNorm recalibration: running statistics become the pooled statistics of the BatchNorm inputs, nothing else."""

import numpy as np
import pytest
import torch
from torch import nn

from core.downstream.batchnorm import recalibrate_batchnorm


class ConvBN(nn.Module):
    """conv -> BatchNorm2d -> dropout -> pooled features; the descriptor scales the input (so it matters)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=0.3)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x * (1 + invariance[0])))
        return self.head(self.drop(h).mean(dim=(2, 3)))


def _inputs(device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, 6, 6, generator=g)
    x[7:] += 3.0  # the last batch has another mean: per-batch averaging would lose the between-batch spread
    return x.to(device)


def test_running_statistics_are_the_pooled_statistics_of_the_bn_inputs(device):
    model = ConvBN().to(device)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs(device)
    invariance = torch.tensor([0.5, 1.0], device=device)

    out = recalibrate_batchnorm(model, x, invariance, batch_size=4)  # batches of 4, 3, 3

    with torch.no_grad():
        bn_inputs = model.conv(x * 1.5).double().cpu().numpy()  # (N, C, H, W)
    per_channel = bn_inputs.transpose(1, 0, 2, 3).reshape(4, -1)  # (C, N·H·W)
    np.testing.assert_allclose(out.bn.running_mean.cpu().numpy(), per_channel.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.bn.running_var.cpu().numpy(), per_channel.var(axis=1, ddof=1), rtol=1e-5)
    assert int(out.bn.num_batches_tracked) == 3
    assert not out.training and not out.bn.training and out.bn.momentum == 0.3

    # The original is untouched, and only the copy's running statistics changed.
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key
    changed = {k for k, v in out.state_dict().items() if not torch.equal(v, original[k])}
    assert changed == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}


def test_torch_cumulative_average_differs_on_unequal_batches(device):
    """Pins why the pooled moments are used: momentum=None averages per-batch statistics, not the dataset's."""
    model = ConvBN().to(device)
    x = _inputs(device)
    invariance = torch.tensor([0.5, 1.0], device=device)
    naive = ConvBN().to(device)
    naive.bn.reset_running_stats()
    naive.bn.momentum = None
    naive.train()
    with torch.no_grad():
        for batch in torch.tensor_split(x, 3):
            naive(batch, invariance)
    pooled = recalibrate_batchnorm(model, x, invariance, batch_size=4)
    assert not torch.allclose(naive.bn.running_var, pooled.bn.running_var, rtol=1e-3)
    # With one batch holding every input both agree.
    single = recalibrate_batchnorm(model, x, invariance, batch_size=len(x))
    naive.bn.reset_running_stats()
    with torch.no_grad():
        naive(x, invariance)
    torch.testing.assert_close(single.bn.running_mean, naive.bn.running_mean)
    torch.testing.assert_close(single.bn.running_var, naive.bn.running_var)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="at least 2 inputs"):
        recalibrate_batchnorm(ConvBN(), torch.zeros(1, 3, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="batch_size"):
        recalibrate_batchnorm(ConvBN(), torch.zeros(4, 3, 4, 4), torch.zeros(2), batch_size=1)
