"""Downstream metrics: equal to scikit-learn's on random data, and whole-set numbers differ from per-batch means."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_squared_error
from sklearn.metrics import r2_score as sk_r2_score

from core.downstream.metrics import accuracy, compute_metric, mean_per_class_accuracy, mse, r2_score


def _classification(seed, n=300, num_classes=7):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (n,), generator=g)
    logits = torch.randn(n, num_classes, generator=g) + 1.5 * torch.nn.functional.one_hot(y, num_classes)
    return logits, y


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_matches_sklearn(seed):
    logits, y = _classification(seed)
    expected = accuracy_score(y.numpy(), logits.argmax(1).numpy())
    assert accuracy(logits, y) == pytest.approx(expected, abs=1e-12)
    assert accuracy(logits.argmax(1), y) == pytest.approx(expected, abs=1e-12)
    assert compute_metric("top1", logits, y) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_mean_per_class_matches_balanced_accuracy(seed):
    logits, y = _classification(seed)
    pred = logits.argmax(1)
    expected = balanced_accuracy_score(y.numpy(), pred.numpy())
    assert mean_per_class_accuracy(pred, y, num_classes=7) == pytest.approx(expected, abs=1e-12)
    assert mean_per_class_accuracy(logits, y) == pytest.approx(expected, abs=1e-12)


def test_mean_per_class_ignores_classes_absent_from_targets_like_sklearn():
    y = torch.tensor([0, 0, 1, 1, 1, 3])
    pred = torch.tensor([0, 2, 1, 1, 2, 3])  # class 2 is predicted but never a target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has classes not in y_true
        expected = balanced_accuracy_score(y.numpy(), pred.numpy())
    assert mean_per_class_accuracy(pred, y, num_classes=5) == pytest.approx(expected)
    assert expected == pytest.approx((0.5 + 2 / 3 + 1) / 3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("outputs", [None, 1, 4])
def test_r2_and_mse_match_sklearn(seed, outputs):
    g = torch.Generator().manual_seed(seed)
    shape = (200,) if outputs is None else (200, outputs)
    target = torch.randn(shape, generator=g) * torch.linspace(0.5, 3, outputs or 1) + 2
    pred = target + 0.7 * torch.randn(shape, generator=g)
    assert r2_score(pred, target) == pytest.approx(sk_r2_score(target.numpy(), pred.numpy()), abs=1e-6)
    assert mse(pred, target) == pytest.approx(mean_squared_error(target.numpy(), pred.numpy()), rel=1e-6)
    assert compute_metric("r2", pred, target) == pytest.approx(r2_score(pred, target))


def test_r2_constant_target_outputs_follow_sklearn():
    target = torch.tensor([[1.0, 3.0, 0.0], [2.0, 3.0, 0.0], [4.0, 3.0, 0.0]])
    pred = torch.tensor([[1.5, 3.0, 0.1], [2.0, 3.0, 0.0], [3.0, 3.0, 0.0]])  # output 1 exact, output 2 not
    expected = sk_r2_score(target.double().numpy(), pred.double().numpy())
    assert r2_score(pred, target) == pytest.approx(expected, abs=1e-12)
    per_output = sk_r2_score(target.numpy(), pred.numpy(), multioutput="raw_values")
    np.testing.assert_allclose(per_output[1:], [1.0, 0.0])


def test_whole_set_metrics_differ_from_per_batch_averages():
    """The authors' code averaged R² and per-class accuracy over mini-batches; that is a different number."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(400, 3, generator=g) + torch.linspace(0, 4, 400).unsqueeze(1)  # drifts over the set
    pred = target + 0.8 * torch.randn(400, 3, generator=g)
    batches = [(pred[i : i + 16], target[i : i + 16]) for i in range(0, 400, 16)]
    per_batch = float(np.mean([r2_score(p, t) for p, t in batches]))
    whole = r2_score(pred, target)
    assert whole == pytest.approx(sk_r2_score(target.numpy(), pred.numpy()), abs=1e-6)
    assert abs(whole - per_batch) > 0.1

    logits, y = _classification(1, n=400)
    per_batch = float(np.mean([mean_per_class_accuracy(logits[i : i + 16], y[i : i + 16]) for i in range(0, 400, 16)]))
    whole = mean_per_class_accuracy(logits, y)
    assert whole == pytest.approx(balanced_accuracy_score(y.numpy(), logits.argmax(1).numpy()))
    assert whole != pytest.approx(per_batch, abs=1e-3)


def test_metric_errors():
    with pytest.raises(ValueError, match="predictions for"):
        accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class labels"):
        accuracy(torch.tensor([0.5, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        mean_per_class_accuracy(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="at least 2"):
        r2_score(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="same shape"):
        r2_score(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="Unknown metric"):
        compute_metric("top5", torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
