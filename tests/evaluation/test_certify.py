"""Randomized smoothing (Cohen et al. 2019): certificates against an independent reference,
exact radii of a constant classifier, abstentions on ties, refusals before work, determinism,
the ``certified`` audit check and ``mlwarden evaluate certify``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from mlwarden.audit.registry import TEXT_NOT_YET, AuditContext, NotApplicable
from mlwarden.core import Classifier, InputSpec
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.findings import Report
from mlwarden.core.oracle import ClassifierOracle, Oracle
from mlwarden.core.training import fit
from mlwarden.evaluation.certify import (
    ABSTAIN,
    CertifySettings,
    SmoothedClassifier,
    certified_check,
    certify_dataset,
    lower_confidence_bound,
    run_certify,
)
from mlwarden.io.dataset import Dataset

SIGMA = 0.25


def tiny_cnn() -> nn.Module:
    """The benchmark's tiny digits CNN (benchmarks/bench_certify.py): one strided conv."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def noisy_cnn(digits_split: tuple[Dataset, Dataset], digits_spec: InputSpec) -> Classifier:
    """A tiny CNN trained on digits with Gaussian noise (sigma 0.25) added to every batch,
    so its smoothed version is accurate (Cohen et al. train the base model this way)."""
    train, _ = digits_split
    torch.manual_seed(0)
    module = tiny_cnn()
    gen = torch.Generator().manual_seed(1)

    def gaussian(_m: nn.Module, xb: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return xb + SIGMA * torch.randn(xb.shape, generator=gen)

    fit(module, train.x, train.y, epochs=12, lr=3e-3, batch_size=64, seed=0, transform=gaussian)
    return Classifier(module, digits_spec, name="digits-noisy-cnn")


@pytest.fixture(scope="module")
def noisy_cnn_pt2(noisy_cnn: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlwarden.io.export import save_pt2

    path = tmp_path_factory.mktemp("certify") / "noisy_cnn.pt2"
    save_pt2(noisy_cnn, path)
    return path


class Counting(nn.Module):
    """Wraps a module and counts the inputs it classified (to prove no work was done)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.inner(x)


class Constant(nn.Module):
    def __init__(self, label: int, classes: int = 10) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(classes).index_fill_(0, torch.tensor(label), 5.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


class Threshold(nn.Module):
    """Class 0 where pixel (0, 0) is above 0.5, else class 1: an input at exactly 0.5 makes
    the two classes equally likely under any Gaussian noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = x[:, 0, 0, 0] - 0.5
        return torch.stack([margin, -margin], dim=1)


def reference_certify(
    model: Classifier, x: torch.Tensor, n0: int, n: int, alpha: float, seed: int
) -> tuple[list[int], list[float], list[tuple[float, float]]]:
    """CERTIFY written out plainly (Cohen et al., Algorithm "certify"): its own noise, a
    Python dict of votes per noisy copy, scipy's exact binomial test for the bound.

    Returns the prediction (-1 abstain), the radius and the two-sided 1e-6 Clopper-Pearson
    interval of pA, whose radii bound where an independent estimate may fall."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    predictions, radii, intervals = [], [], []
    for xi in x:
        votes0: dict[int, int] = {}
        for label in model.predict(xi + SIGMA * torch.randn((n0, *xi.shape), generator=gen)):
            votes0[int(label)] = votes0.get(int(label), 0) + 1
        c_a = max(sorted(votes0), key=lambda c: votes0[c])
        labels = model.predict(xi + SIGMA * torch.randn((n, *xi.shape), generator=gen))
        n_a = sum(1 for label in labels.tolist() if label == c_a)
        p_lower = binomtest(n_a, n).proportion_ci(1 - 2 * alpha, method="exact").low
        ci = binomtest(n_a, n).proportion_ci(1 - 1e-6, method="exact")
        intervals.append((ci.low, ci.high))
        if p_lower < 0.5:
            predictions.append(ABSTAIN)
            radii.append(0.0)
        else:
            predictions.append(c_a)
            radii.append(SIGMA * norm.ppf(p_lower))
    return predictions, radii, intervals


def test_certified_curve_matches_an_independent_reference(noisy_cnn, digits_split) -> None:
    _, test = digits_split
    x, y = test.x[:12], test.y[:12]
    n0, n, alpha = 50, 4000, 0.001
    ours = certify_dataset(noisy_cnn, x, y, sigma=SIGMA, n0=n0, n=n, alpha=alpha, seed=3)
    ref_pred, ref_radius, intervals = reference_certify(noisy_cnn, x, n0, n, alpha, seed=3)
    assert ours.certified_accuracy(0.0) > 0.5  # the noise-trained model is certifiably useful
    for i, (lo, hi) in enumerate(intervals):
        # our estimate of pA lies in the reference's 1 - 1e-6 interval ...
        assert lo <= int(ours.count[i]) / n <= hi, i
        if ref_pred[i] != ABSTAIN and ours.prediction[i] != ABSTAIN:
            assert int(ours.prediction[i]) == ref_pred[i]
            # ... so its radius lies between the radii the interval's ends give
            low = SIGMA * norm.ppf(max(beta.ppf(alpha, lo * n, n - lo * n + 1), 0.5))
            high = SIGMA * norm.ppf(beta.ppf(alpha, hi * n, n - hi * n + 1))
            assert low - 1e-9 <= float(ours.radius[i]) <= high + 1e-9, i
    # the curves differ only by samples whose reference interval straddles the radius
    for r in (0.0, 0.25, 0.5, 0.75):
        ref_acc = np.mean(
            [p == int(t) and rad >= r for p, rad, t in zip(ref_pred, ref_radius, y, strict=True)]
        )
        straddle = sum(
            SIGMA * norm.ppf(max(beta.ppf(alpha, lo * n, n - lo * n + 1), 1e-12))
            < r
            <= SIGMA * norm.ppf(beta.ppf(alpha, hi * n, n - hi * n + 1))
            for lo, hi in intervals
        )
        assert abs(ours.certified_accuracy(r) - ref_acc) <= straddle / len(y) + 1e-9, r


def test_lower_bound_is_the_exact_one_sided_clopper_pearson_bound() -> None:
    for k, n, alpha in [(0, 100, 0.001), (1, 100, 0.01), (73, 100, 0.001), (99_990, 100_000, 1e-3)]:
        expected = binomtest(k, n).proportion_ci(1 - 2 * alpha, method="exact").low
        assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, abs=1e-12)


def test_a_constant_classifier_gets_the_exact_radius(digits_spec, digits_split) -> None:
    _, test = digits_split
    model = Classifier(Constant(label=3), digits_spec, name="constant")
    n, alpha = 1000, 0.001
    y = torch.full((4,), 3)
    res = certify_dataset(model, test.x[:4], y, sigma=0.5, n0=10, n=n, alpha=alpha)
    # every vote is class 3: pA_lower = alpha ** (1 / n), radius = sigma * Phi^-1 of it
    expected = 0.5 * norm.ppf(alpha ** (1 / n))
    assert res.prediction.tolist() == [3, 3, 3, 3]
    assert res.count.tolist() == [n] * 4
    assert res.radius.tolist() == pytest.approx([expected] * 4, abs=1e-9)
    assert res.max_radius == pytest.approx(expected, abs=1e-9)  # all votes: the largest
    assert res.certified_accuracy(expected) == 1.0
    assert res.certified_accuracy(expected + 1e-6) == 0.0
    assert res.abstain_rate == 0.0
    summary = res.summary(0.5)
    assert summary["base_accuracy"] == summary["smoothed_accuracy"] == 1.0
    assert summary["certified_accuracy@0.5"] == 1.0 and summary["abstain_rate"] == 0.0


def test_ties_abstain_in_certify_and_predict() -> None:
    spec = InputSpec(shape=(1, 8, 8), class_names=("a", "b"))
    model = Classifier(Threshold(), spec, name="threshold")
    tie = torch.full((6, 1, 8, 8), 0.5)
    smoothed = SmoothedClassifier(model, 0.25, seed=0)
    prediction, radius, p_lower, _ = smoothed.certify(tie, n0=100, n=2000, alpha=0.001)
    assert prediction.tolist() == [ABSTAIN] * 6 and radius.tolist() == [0.0] * 6
    assert bool((p_lower < 0.5).all())
    assert smoothed.predict(tie, n=2000, alpha=0.001).tolist() == [ABSTAIN] * 6
    # far from the boundary (pixel at 1.0: P(class a) = Phi(2) ~ 0.977) it predicts class a
    clear = torch.ones((2, 1, 8, 8))
    assert smoothed.predict(clear, n=2000, alpha=0.001).tolist() == [0, 0]
    prediction, radius, _, _ = smoothed.certify(clear, n0=100, n=2000, alpha=0.001)
    assert prediction.tolist() == [0, 0]
    # the true radius is 0.25 * Phi^-1(Phi(2)) = 0.5; the certificate is below it
    assert bool((radius > 0.35).all() and (radius < 0.5).all())


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"sigma": 0.0}, "sigma must be a positive"),
        ({"sigma": -0.1}, "sigma must be a positive"),
        ({"sigma": float("nan")}, "sigma must be a positive"),
        ({"n0": 100, "n": 50}, "n must be a number of samples at least n0"),
        ({"alpha": 0.0}, r"alpha must lie in \(0, 1\)"),
        ({"alpha": 1.0}, r"alpha must lie in \(0, 1\)"),
        ({"radii": [-0.5]}, "radii must be non-negative"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(digits_spec, kwargs, needle) -> None:
    inner = Counting(Constant(0))
    model = Classifier(inner, digits_spec)
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ParameterError, match=needle):
        certify_dataset(model, x, y, **{"n0": 10, "n": 100, **kwargs})
    assert inner.seen == 0


def test_nan_and_out_of_bounds_data_are_refused_before_any_work(digits_spec) -> None:
    inner = Counting(Constant(0))
    model = Classifier(inner, digits_spec)
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(DataError, match="certification data"):
        certify_dataset(model, x, y, n0=10, n=100)
    with pytest.raises(DataError, match="outside the input bounds"):
        certify_dataset(model, torch.full((2, 1, 8, 8), 3.0), y[:2], n0=10, n=100)
    with pytest.raises(DataError, match="empty"):
        certify_dataset(model, torch.empty(0, 1, 8, 8), y[:0], n0=10, n=100)
    with pytest.raises(DataError):
        certify_dataset(model, torch.rand(3, 1, 8, 8), torch.full((3,), 12), n0=10, n=100)
    assert inner.seen == 0


def test_settings_refuse_bad_values_with_the_parameter_named() -> None:
    from pydantic import ValidationError

    for bad, needle in [
        ({"sigma": 0}, "sigma"),
        ({"alpha": 1.5}, "alpha"),
        ({"n": 10, "n0": 100}, "n (10) must be at least n0 (100)"),
        ({"radii": [-1.0]}, "radii"),
        ({"unknown": 1}, "unknown"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(needle)):
            CertifySettings(**bad)  # type: ignore[arg-type]


def test_same_seed_same_certificates_and_shards_agree(noisy_cnn, digits_split) -> None:
    _, test = digits_split
    x, y = test.x[:6], test.y[:6]
    kw = {"sigma": SIGMA, "n0": 20, "n": 500, "alpha": 0.01, "batch_size": 256}
    a = certify_dataset(noisy_cnn, x, y, seed=7, **kw)
    b = certify_dataset(noisy_cnn, x, y, seed=7, **kw)
    c = certify_dataset(noisy_cnn, x, y, seed=8, **kw)
    assert torch.equal(a.count, b.count) and torch.equal(a.radius, b.radius)
    assert not torch.equal(a.count, c.count)
    # a shard (samples 2..5, numbered from 2) gives the rows of the whole run
    shard = certify_dataset(noisy_cnn, x[2:], y[2:], seed=7, first_index=2, **kw)
    assert torch.equal(shard.count, a.count[2:]) and torch.equal(shard.radius, a.radius[2:])
    # a label-only oracle of the same model gives the same certificates
    oracle = ClassifierOracle(noisy_cnn, output="labels")
    d = certify_dataset(oracle, x, y, seed=7, **kw)
    assert torch.equal(d.count, a.count)
    assert oracle.queries == a.noise_samples + len(x)  # n0 + n per sample, and the base labels


def test_batches_span_inputs_and_count_every_sample(noisy_cnn, digits_split) -> None:
    _, test = digits_split
    smoothed = SmoothedClassifier(noisy_cnn, SIGMA, batch_size=64, seed=0)
    counts = smoothed.class_counts(test.x[:5], 150)
    assert counts.shape == (5, 10) and counts.sum(dim=1).tolist() == [150] * 5
    assert smoothed.noise_samples == 750


class TextOracle(Oracle):
    """A text score oracle (strings in): randomized smoothing does not apply to it."""

    def _query(self, x: list[str]) -> torch.Tensor:  # pragma: no cover - never asked
        return torch.full((len(x), 2), 0.5)


def test_check_on_a_text_model_is_not_applicable() -> None:
    from mlwarden.core.text import TextSpec

    spec = TextSpec(
        max_tokens=16, class_names=("neg", "pos"), tokenizer="T", tokenizer_sha256="0", vocab_size=9
    )
    ctx = AuditContext(data_source="digits", _oracle=TextOracle(spec), check="certified")
    with pytest.raises(NotApplicable) as exc:
        certified_check(ctx, CertifySettings(n0=10, n=100))
    assert TEXT_NOT_YET in str(exc.value) and "tensor inputs" in str(exc.value)


def test_audit_check_writes_its_figure_and_findings(noisy_cnn_pt2: Path, tmp_path: Path) -> None:
    import tomllib

    from mlwarden.audit.runner import run_audit
    from mlwarden.config import parse_config

    config = parse_config(
        tomllib.loads(
            f"""
[model]
path = "{noisy_cnn_pt2}"
[data]
source = "digits"
limit = 30
[audit]
output_dir = "report"
formats = ["html", "json"]
fail_on = "high"
[checks.certified]
n0 = 20
n = 400
alpha = 0.01
radii = [0.0, 0.25, 0.5]
at_radius = 0.25
min_certified_accuracy = 0.99
"""
        ),
        base_dir=tmp_path,
    )
    outcome = run_audit(config, only=["certified"])
    report = outcome.report
    (check,) = report.checks
    assert check.name == "certified" and check.status == "failed"
    ids = [f.id for f in report.findings if f.check == "certified"]
    assert "MLW-CRT-001" in ids and "MLW-CRT-010" in ids
    assert 0.0 < report.metrics["certified.accuracy@0.25"] < 0.99
    (figure,) = [f for f in report.figures if f.id.startswith("certified-curve")]
    ys = figure.series[0].y
    assert ys == sorted(ys, reverse=True) and ys[0] == pytest.approx(
        report.metrics["certified.accuracy@0"], abs=1e-6
    )
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "Certified accuracy vs L2 radius" in html and "MLW-CRT-010" in html
    saved = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert saved["metrics"]["certified.samples"] == 30


def test_cli_and_check_agree(cli, noisy_cnn, noisy_cnn_pt2: Path, tmp_path: Path) -> None:
    npz = tmp_path / "certs.npz"
    res = cli(
        "evaluate", "certify", "-m", str(noisy_cnn_pt2), "-d", "digits", "--samples", "10",
        "--sigma", "0.25", "--n0", "20", "--n", "300", "--alpha", "0.01", "--radius", "0",
        "--radius", "0.3", "--min-certified-accuracy", "0", "--seed", "4",
        "--output-npz", str(npz), "--format", "json", "--no-progress",
    )  # fmt: skip
    assert res.code == 0, res.err
    cli_report = json.loads(res.out)
    from mlwarden.io.dataset import load_builtin

    settings = CertifySettings(
        sigma=0.25, n0=20, n=300, alpha=0.01, radii=[0, 0.3], samples=10, min_certified_accuracy=0
    )
    report = Report()
    result = run_certify(noisy_cnn, load_builtin("digits"), settings, report, seed=4)
    skip = {"certified.seconds"}
    assert {k: v for k, v in cli_report["metrics"].items() if k not in skip} == {
        k: v for k, v in report.metrics.items() if k not in skip
    }
    with np.load(npz) as saved:
        assert saved["radius"] == pytest.approx(result.radius.numpy())
        assert saved["prediction"].tolist() == result.prediction.tolist()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--sigma", "0"], "--sigma"),
        (["--n", "10", "--n0", "100"], "n (10) must be at least n0 (100)"),
        (["--alpha", "1"], "--alpha"),
    ],
)
def test_cli_usage_errors_exit_2(cli, noisy_cnn_pt2: Path, args, needle) -> None:
    res = cli("evaluate", "certify", "-m", str(noisy_cnn_pt2), "-d", "digits", *args)
    assert res.code == 2
    assert needle in res.err and "Traceback" not in res.err
