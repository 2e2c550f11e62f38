"""Adversarial training: PGD-AT and TRADES raise robustness, the fast method's monitor
reacts to catastrophic overfitting, bad input is refused, seeds repeat."""

from __future__ import annotations

import copy

import pytest
import torch

from mlwarden.attacks.evasion import PGD
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.spec import SpecOverride
from mlwarden.defenses.training.adversarial import adversarial_train
from mlwarden.defenses.training.harden import HardenSettings, run_harden
from mlwarden.defenses.training.hardening_settings import AdversarialTrainingSettings
from mlwarden.io import from_module

# small budgets: the tests check direction and behaviour; docs/hardening.md has the figures
FAST = {"epochs": 2, "steps": 3, "warmup_epochs": 1, "monitor_samples": 32}


def _pgd_robust(model, x, y, eps=0.1) -> float:
    return PGD(eps, steps=10, seed=0)(model, x, y).robust_accuracy


@pytest.fixture(scope="module")
def train_test(digits_split):
    train, test = digits_split
    return train.take(700), test.take(150)


@pytest.fixture(scope="module")
def pgd_trained(digits_cnn, train_test):
    train, _ = train_test
    return adversarial_train(digits_cnn, train.x, train.y, method="pgd", seed=0, **FAST)


def test_pgd_training_raises_robust_accuracy(digits_cnn, pgd_trained, train_test):
    _, test = train_test
    before = _pgd_robust(digits_cnn, test.x, test.y)
    after = _pgd_robust(pgd_trained.classifier, test.x, test.y)
    assert after > before + 0.1, (before, after)
    assert pgd_trained.classifier.accuracy(test.x, test.y) > 0.85
    assert [e.eps for e in pgd_trained.epochs] == pytest.approx([0.1, 0.1])
    # only fast training holds samples apart for the overfitting monitor
    assert pgd_trained.monitor_samples == 0
    assert all(e.pgd_accuracy is None for e in pgd_trained.epochs)


def test_the_model_itself_is_not_modified(digits_cnn, pgd_trained):
    ours = dict(pgd_trained.classifier.module.named_parameters())
    for name, p in digits_cnn.module.named_parameters():
        assert not torch.equal(p, ours[name])
    assert pgd_trained.classifier is not digits_cnn


def test_trades_raises_robust_accuracy(digits_cnn, train_test):
    train, test = train_test
    res = adversarial_train(digits_cnn, train.x, train.y, method="trades", seed=0, **FAST)
    before = _pgd_robust(digits_cnn, test.x, test.y)
    after = _pgd_robust(res.classifier, test.x, test.y)
    assert after > before + 0.05, (before, after)
    assert res.classifier.accuracy(test.x, test.y) > 0.85


def test_same_seed_same_model(digits_cnn, train_test):
    train, _ = train_test
    kw = {"method": "fast", "epochs": 1, "monitor_samples": 16}
    a = adversarial_train(digits_cnn, train.x[:200], train.y[:200], seed=3, **kw)
    b = adversarial_train(digits_cnn, train.x[:200], train.y[:200], seed=3, **kw)
    c = adversarial_train(digits_cnn, train.x[:200], train.y[:200], seed=4, **kw)
    sa, sb, sc = (r.classifier.module.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_eps_ramps_linearly_over_the_warmup():
    s = AdversarialTrainingSettings(eps=0.2, warmup_epochs=4)
    assert [s.eps_at(e) for e in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert AdversarialTrainingSettings(eps=0.2, warmup_epochs=0).eps_at(0) == 0.2
    assert AdversarialTrainingSettings(method="fast", eps=0.2).step_size() == pytest.approx(0.25)
    assert AdversarialTrainingSettings(eps=0.2, steps=10).step_size() == pytest.approx(0.05)


class _Collapse:
    """A monitor that reports Wong et al.'s signature at its third call (PGD accuracy falls
    from 0.7 to 0.05 while FGSM accuracy climbs to 0.9) and records the weights it saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.states: list[dict[str, torch.Tensor]] = []

    def __call__(self, model, x, y):
        self.calls += 1
        self.states.append(copy.deepcopy(model.module.state_dict()))
        return [(0.5, 0.5), (0.7, 0.72), (0.05, 0.9), (0.6, 0.6), (0.6, 0.6)][self.calls - 1]


@pytest.mark.parametrize("action", ["stop", "fallback"])
def test_catastrophic_overfitting_restores_the_best_epoch(digits_cnn, train_test, action):
    train, _ = train_test
    watch = _Collapse()
    res = adversarial_train(
        digits_cnn, train.x[:300], train.y[:300], method="fast", epochs=4, alpha=0.3,
        monitor_samples=32, on_overfit=action, monitor=watch, seed=0,
    )
    assert res.overfit_epoch == 3 and res.best_epoch == 2
    assert "catastrophic overfitting at epoch 3" in res.events[0]
    if action == "stop":
        assert len(res.epochs) == 3 and res.events[0].endswith("stopped")
        final = res.classifier.module.state_dict()
        assert all(torch.equal(final[k], watch.states[1][k]) for k in final)
    else:
        assert len(res.epochs) == 4 and "trained on with pgd" in res.events[0]
        assert [e.method for e in res.epochs] == ["fast", "fast", "fast", "pgd"]


def test_a_deliberately_large_step_fast_run_is_caught(digits_split, digits_spec):
    """A real collapse, not a scripted one: FGSM training of a fresh CNN at eps 0.3 with a
    2-eps step learns to beat FGSM (held-apart FGSM accuracy climbs past 0.3) while PGD
    accuracy stays near zero; the monitor catches it and stops."""
    from mlwarden.core import Classifier
    from mlwarden.models import SmallCNN

    train, _ = digits_split
    torch.manual_seed(0)
    fresh = Classifier(SmallCNN(), digits_spec, name="fresh")
    res = adversarial_train(
        fresh, train.x, train.y, method="fast", eps=0.3, alpha=0.6, lr=0.01, epochs=14,
        warmup_epochs=0, on_overfit="stop", seed=0,
    )
    assert res.overfit_epoch is not None and len(res.epochs) == res.overfit_epoch < 14
    last = res.epochs[-1]
    assert last.fgsm_accuracy - last.pgd_accuracy >= 0.3
    assert "masks the one-step gradient" in res.events[0] and res.events[0].endswith("stopped")


def test_no_overfitting_reported_on_a_healthy_run(digits_cnn, train_test):
    train, _ = train_test
    res = adversarial_train(digits_cnn, train.x[:300], train.y[:300], method="fast", seed=0,
                            epochs=2, monitor_samples=32)
    assert res.overfit_epoch is None and res.events == []


def test_gaussian_noise_training_keeps_clean_accuracy(digits_cnn, train_test):
    train, test = train_test
    res = adversarial_train(digits_cnn, train.x, train.y, method="gaussian", sigma=0.25,
                            epochs=2, seed=0, monitor_samples=0)
    assert res.monitor_samples == 0 and res.epochs[0].pgd_accuracy is None
    noisy = test.x + 0.25 * torch.randn(test.x.shape, generator=torch.Generator().manual_seed(0))
    assert res.classifier.accuracy(noisy, test.y) >= digits_cnn.accuracy(noisy, test.y)


class UserNet(torch.nn.Module):
    """A user's own module, unknown to mlwarden."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU()
        )
        self.out = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.out(self.body(x))


def test_a_users_own_module_is_hardened_through_the_front_door(digits):
    from mlwarden.core.training import fit

    torch.manual_seed(0)
    net = UserNet()
    fit(net, digits.x[:600], digits.y[:600], epochs=5, lr=3e-3, seed=0)
    model = from_module(net, SpecOverride(shape=(1, 8, 8), bounds=(0.0, 1.0)))
    settings = HardenSettings(preset="pgd", samples=100, **{**FAST, "epochs": 5})
    run = run_harden(model, digits.take(600), settings, seed=0)
    assert run.after.robust_accuracy > run.before.robust_accuracy
    assert run.classifier.module is not net and isinstance(run.classifier.module, UserNet)


def test_bad_input_gives_clear_errors(digits_cnn, train_test):
    train, _ = train_test
    x, y = train.x[:50], train.y[:50]
    with pytest.raises(ParameterError, match="eps"):
        adversarial_train(digits_cnn, x, y, eps=-0.1)
    with pytest.raises(ParameterError, match="method: must be one of pgd, trades, fast"):
        adversarial_train(digits_cnn, x, y, method="free")
    with pytest.raises(ParameterError, match="eps: Input should be greater than 0"):
        adversarial_train(digits_cnn, x, y, eps=float("nan"))
    bad = x.clone()
    bad[3, 0, 2, 2] = float("nan")
    with pytest.raises(DataError, match="NaN or infinite values in 1 sample"):
        adversarial_train(digits_cnn, bad, y)
    with pytest.raises(DataError, match="single class"):
        adversarial_train(digits_cnn, x, torch.zeros_like(y))


def test_harden_settings_train_as_their_training_part(digits_cnn, train_test):
    train, _ = train_test
    settings = HardenSettings(method="fast", epochs=1, monitor_samples=0, preset="pgd")
    res = adversarial_train(digits_cnn, train.x[:100], train.y[:100], settings, epochs=2)
    assert res.method == "fast" and len(res.epochs) == 2  # keyword overrides win
