"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019).

The *smoothed* classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` of a base
classifier ``f`` is provably constant within an L2 ball of radius
``sigma * Phi^-1(pA)`` around ``x`` when class ``cA`` has probability at least ``pA`` under
the noise. ``CERTIFY`` (the paper's Algorithm, "certify") picks ``cA`` from ``n0`` noisy
samples, counts ``cA`` in ``n`` fresh ones, takes the one-sided Clopper-Pearson lower bound
``pA_lower`` at level ``alpha``, and abstains when ``pA_lower < 0.5``; with probability at
least ``1 - alpha`` over the noise, a returned radius is a true certificate. ``PREDICT``
returns the top class of ``n`` samples only when a binomial test of the top two counts
rejects a tie at ``alpha``.

What is certified is ``g``, not ``f``: a deployment that serves the base model alone has no
such guarantee (the report says so in MLW-CRT-001). Noise is added in the model's input
space (the units of ``InputSpec.bounds``; any mean/std normalisation runs after, inside
the classifier), so ``sigma`` and the radii are in those units. Noisy samples are **not**
clipped to the bounds, as in Cohen et al.: clipping would change the noise distribution
the certificate is derived for.

Speed: the noise is drawn in batches of ``batch_size`` samples on the model's device, the
base classifier runs under ``torch.inference_mode`` and the votes are counted per class
with one ``bincount`` per batch; the ``n0`` selection samples of many inputs share one
batch. Each input's noise comes from its own generator, seeded from ``(seed, index,
phase)``, so a sample's certificate does not depend on which other samples run with it
(sharding by sample range gives the same answers); it does depend on ``batch_size``
(torch draws normals differently for different chunk sizes).

`CertifySettings` + `run_certify` are the front door of ``mlwarden evaluate certify`` and
of the ``certified`` audit check (``[checks.certified]`` is `CertifySettings`). No torch
import at module level: the audit registry imports the settings to validate the config.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.core.contract import Capability, note_assumptions, require
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress

if TYPE_CHECKING:
    import torch

    from mlwarden.core.findings import Report
    from mlwarden.io.dataset import Dataset

ATLAS_EVASION = ["AML.T0015", "AML.T0043"]  # Evade ML Model; Craft Adversarial Data
OWASP_EVASION = ["ML01"]  # Input Manipulation Attack

ABSTAIN = -1
"""The class index of an abstention (``prediction`` of a sample that was not certified)."""

INPUT_VALUES_PER_BATCH = 2**18
"""With no ``batch_size`` given, a batch holds about this many input values (1 MiB of
float32): 4096 noisy 8x8 digits, 85 CIFAR images. Measured on the digits CNN of
benchmarks/bench_certify.py: 4096 per batch cost less CPU time per sample than 16384 (the
activations stay in cache); on a GPU a larger ``batch_size`` pays."""

DEFAULT_MIN_CERTIFIED_ACCURACY = 0.5
"""A policy, not a measurement: the certified accuracy your system must keep at ``at_radius``."""

Radius = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class CertifySettings(CheckConfig):
    """Randomized-smoothing certification (``evaluate certify``, ``[checks.certified]``).

    Defaults are Cohen et al.'s (``n0`` 100, ``n`` 100,000, ``alpha`` 0.001).
    """

    sigma: float = Field(0.25, gt=0.0, allow_inf_nan=False, description="noise std, in input units")
    n0: int = Field(100, ge=1, description="noise samples that select the class")
    n: int = Field(100_000, ge=1, description="noise samples that estimate its probability")
    alpha: float = Field(
        0.001, gt=0.0, lt=1.0, description="failure probability of each certificate"
    )
    radii: list[Radius] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="L2 radii the certified accuracy is reported at",
    )
    samples: int = Field(500, ge=1, description="certify at most this many samples")
    batch_size: int | None = Field(
        None, ge=1, description="noisy samples per forward pass (default: ~262k input values)"
    )
    at_radius: Radius = Field(0.5, description="the radius min_certified_accuracy applies at")
    min_certified_accuracy: float | None = Field(
        DEFAULT_MIN_CERTIFIED_ACCURACY,
        ge=0.0,
        le=1.0,
        description="HIGH finding below this certified accuracy at at_radius",
    )
    seed: int | None = Field(None, description="defaults to the audit seed (--seed)")

    @field_validator("n")
    @classmethod
    def _at_least_n0(cls, n: int, info: ValidationInfo) -> int:
        n0 = info.data.get("n0")
        if n0 is not None and n < n0:
            raise ValueError(
                f"n ({n}) must be at least n0 ({n0}): n estimates the probability of the "
                "class that n0 selects"
            )
        return n


def check_parameters(sigma: float, n0: int, n: int, alpha: float) -> None:
    """Refuse, before any work, parameters that make no certificate (names the parameter)."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ParameterError(f"sigma must be a positive finite noise level, got {sigma}")
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ParameterError(f"alpha must lie in (0, 1), got {alpha}")
    if int(n0) != n0 or n0 < 1:
        raise ParameterError(f"n0 must be a positive number of samples, got {n0}")
    if int(n) != n or n < n0:
        raise ParameterError(f"n must be a number of samples at least n0 ({n0}), got {n}")


# -- statistics --------------------------------------------------------------------------------
def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    ``beta.ppf(alpha, k, n - k + 1)`` is the exact bound (Clopper & Pearson 1934), the same
    as ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`` that Cohen et al. use.
    """
    from scipy.stats import beta

    if count <= 0:
        return 0.0
    return float(beta.ppf(alpha, count, n - count + 1))


# -- the smoothed classifier -------------------------------------------------------------------
_SELECTION, _ESTIMATION, _PREDICTION = 0, 1, 2


def _stream_seed(seed: int, index: int, phase: int) -> int:
    """An independent seed for one sample's noise in one phase (NumPy's SeedSequence mixes
    the three numbers, so nearby seeds do not give correlated streams)."""
    import numpy as np

    state = np.random.SeedSequence([int(seed) % 2**63, int(index), int(phase)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) % 2**63


def _base_labels(model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The hard labels of the base classifier for a batch: argmax of a classifier's logits
    (batched under ``inference_mode``), or an oracle's labels (argmax of its scores)."""

    if hasattr(model, "logits"):
        return lambda x: model.logits(x, batch_size=None).argmax(dim=1)

    def ask(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out.argmax(dim=1) if out.dim() == 2 else out.long()

    return ask


class SmoothedClassifier:
    """The Gaussian-smoothed version of a base classifier (Cohen et al. 2019, Sec. 3.2).

    ``model`` is a white-box classifier or a tensor oracle (labels suffice); ``sigma`` is
    in the units of its input bounds. The methods' ``first_index`` numbers the inputs for
    the noise streams, so a shard of a data set gives the same certificates as the whole.
    """

    def __init__(
        self,
        model: Any,
        sigma: float,
        *,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        require(model, (Capability.LABELS,), by="randomized smoothing")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ParameterError(f"sigma must be a positive finite noise level, got {sigma}")
        if batch_size is not None and batch_size < 1:
            raise ParameterError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.num_classes = int(model.spec.num_classes)
        self.shape = tuple(model.spec.shape)
        numel = max(math.prod(self.shape), 1)
        self.batch_size = batch_size or max(1, INPUT_VALUES_PER_BATCH // numel)
        self.device = getattr(model, "device", None)
        self._labels = _base_labels(model)
        self.noise_samples = 0
        """Noisy inputs the base classifier has classified so far (the cost)."""

    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if not isinstance(x, torch.Tensor):
            raise DataError(f"inputs must be a tensor, got {type(x).__name__}")
        if len(x) == 0:
            raise DataError("cannot certify an empty data set")
        self.model.spec.validate_batch(x, what="certification data")  # shape, NaN, bounds
        return x.detach().to(torch.float32)

    def class_counts(
        self,
        x: torch.Tensor,
        num: int,
        *,
        phase: int = _ESTIMATION,
        first_index: int = 0,
        progress: ProgressCallback = null_progress,
        task: str = "certify",
    ) -> torch.Tensor:
        """Votes ``(len(x), C)`` of the base classifier on ``num`` noisy copies of each input.

        Batches are filled across inputs (the ``n0`` = 100 samples of 40 digits go in
        one forward pass of 4096) and a long ``num`` is drawn in chunks, so memory stays
        at one batch.
        """
        import torch

        if num < 1:
            raise ParameterError(f"the number of noise samples must be positive, got {num}")
        c = self.num_classes
        device = self.device if self.device is not None else torch.device("cpu")
        counts = torch.zeros(len(x) * c, dtype=torch.long, device=device)
        gen = torch.Generator(device=device)
        pending: list[torch.Tensor] = []
        owners: list[int] = []
        sizes: list[int] = []

        def flush() -> None:
            batch = pending[0] if len(pending) == 1 else torch.cat(pending)
            labels = self._labels(batch).to(device)
            if labels.shape != (len(batch),) or bool(((labels < 0) | (labels >= c)).any()):
                raise DataError(
                    f"the base classifier returned labels of shape {tuple(labels.shape)} "
                    f"outside 0..{c - 1}"
                )
            rows = torch.repeat_interleave(
                torch.tensor(owners, device=device), torch.tensor(sizes, device=device)
            )
            counts.add_(torch.bincount(rows * c + labels, minlength=len(x) * c))
            self.noise_samples += len(batch)
            pending.clear()
            owners.clear()
            sizes.clear()

        filled = 0
        with torch.inference_mode():
            x = x.to(device)
            for i in range(len(x)):
                gen.manual_seed(_stream_seed(self.seed, first_index + i, phase))
                for start in range(0, num, self.batch_size):
                    # chunks are cut at the same places whatever the neighbouring inputs,
                    # so each input's noise stream (and certificate) is its own
                    m = min(self.batch_size, num - start)
                    if filled + m > self.batch_size:
                        flush()
                        filled = 0
                    noise = torch.randn((m, *self.shape), generator=gen, device=device)
                    pending.append(noise.mul_(self.sigma).add_(x[i]))
                    owners.append(i)
                    sizes.append(m)
                    filled += m
                progress(task, i + 1, len(x))
            if pending:
                flush()
        return counts.view(len(x), c).cpu()

    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        first_index: int = 0,
        progress: ProgressCallback = null_progress,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """CERTIFY for each input: ``(prediction, radius, p_lower, count)``.

        ``prediction`` is `ABSTAIN` (-1) with radius 0 where ``p_lower < 0.5``; ``count`` is
        the votes for the selected class among the ``n`` estimation samples.
        """
        import torch

        check_parameters(self.sigma, n0, n, alpha)
        x = self._check_inputs(x)
        selection = self.class_counts(
            x,
            n0,
            phase=_SELECTION,
            first_index=first_index,
            progress=progress,
            task="certify: selection (n0)",
        )
        chosen = selection.argmax(dim=1)
        estimation = self.class_counts(
            x,
            n,
            phase=_ESTIMATION,
            first_index=first_index,
            progress=progress,
            task="certify: estimation (n)",
        )
        count = estimation.gather(1, chosen.view(-1, 1)).view(-1)
        p_lower = torch.tensor(
            [lower_confidence_bound(int(k), n, alpha) for k in count], dtype=torch.float64
        )
        certified = p_lower >= 0.5
        from scipy.stats import norm

        radius = torch.where(
            certified,
            self.sigma * torch.from_numpy(norm.ppf(p_lower.clamp(0.5, 1.0).numpy())),
            torch.zeros_like(p_lower),
        )
        prediction = torch.where(certified, chosen, torch.full_like(chosen, ABSTAIN))
        return prediction, radius, p_lower, count

    def predict(
        self,
        x: torch.Tensor,
        *,
        n: int = 100_000,
        alpha: float = 0.001,
        first_index: int = 0,
        progress: ProgressCallback = null_progress,
    ) -> torch.Tensor:
        """PREDICT for each input: the top class of ``n`` noisy samples, or `ABSTAIN` unless
        a two-sided binomial test rejects that the top two classes are equally likely at
        ``alpha`` (then, with probability at least ``1 - alpha``, it is ``g(x)``)."""
        import torch
        from scipy.stats import binomtest

        check_parameters(self.sigma, 1, n, alpha)
        x = self._check_inputs(x)
        counts = self.class_counts(
            x,
            n,
            phase=_PREDICTION,
            first_index=first_index,
            progress=progress,
            task="smoothed prediction",
        )
        top = counts.topk(2, dim=1)
        out = torch.full((len(x),), ABSTAIN, dtype=torch.long)
        for i in range(len(x)):
            n_a, n_b = int(top.values[i, 0]), int(top.values[i, 1])
            if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
                out[i] = int(top.indices[i, 0])
        return out


# -- the result --------------------------------------------------------------------------------
@dataclass
class CertificationResult:
    """Per-sample certificates of a smoothed classifier, and the curve they give."""

    sigma: float
    n0: int
    n: int
    alpha: float
    radii: list[float]
    y: torch.Tensor
    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    count: torch.Tensor
    base_correct: torch.Tensor
    noise_samples: int = 0
    seconds: float = 0.0

    @property
    def correct(self) -> torch.Tensor:
        """Certified and right: the smoothed prediction is the label (abstentions are not)."""
        return self.prediction == self.y

    def certified_accuracy(self, radius: float) -> float:
        """Share of samples predicted correctly with a certified radius of at least ``radius``
        (Cohen et al.'s ``correct & (radius >= r)``)."""
        return float((self.correct & (self.radius >= radius)).double().mean())

    @property
    def max_radius(self) -> float:
        """The largest radius these settings can certify at all: every one of the ``n``
        votes for the class gives ``sigma * Phi^-1(alpha ** (1 / n))`` (0.953 for sigma
        0.25, n 100,000, alpha 0.001); larger radii need a larger ``n`` or ``sigma``."""
        from scipy.stats import norm

        return float(self.sigma * norm.ppf(lower_confidence_bound(self.n, self.n, self.alpha)))

    @property
    def abstain_rate(self) -> float:
        return float((self.prediction == ABSTAIN).double().mean())

    @property
    def base_accuracy(self) -> float:
        return float(self.base_correct.double().mean())

    def curve(self, points: int = 41) -> list[tuple[float, float]]:
        """(radius, certified accuracy) on a grid from 0 past the largest certified radius
        and the largest reported radius, for the plot."""
        top = max(max(self.radii), float(self.radius.max()) if len(self.radius) else 0.0)
        top = top if top > 0 else 1.0
        grid = sorted({*(top * k / (points - 1) for k in range(points)), *self.radii})
        return [(r, self.certified_accuracy(r)) for r in grid]

    def summary(self, radius: float) -> dict[str, float]:
        """The certified columns of a before/after hardening table: base and smoothed
        accuracy, certified accuracy at ``radius``, abstain rate, seconds spent."""
        return {
            "base_accuracy": self.base_accuracy,
            "smoothed_accuracy": self.certified_accuracy(0.0),
            f"certified_accuracy@{radius:g}": self.certified_accuracy(radius),
            "abstain_rate": self.abstain_rate,
            "seconds": self.seconds,
        }

    def metrics(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "certified.sigma": self.sigma,
            "certified.samples": len(self.y),
            "certified.base_accuracy": round(self.base_accuracy, 6),
            "certified.abstain_rate": round(self.abstain_rate, 6),
        }
        for r in self.radii:
            out[f"certified.accuracy@{r:g}"] = round(self.certified_accuracy(r), 6)
        right = self.correct
        out["certified.median_radius"] = (
            round(float(self.radius[right].median()), 6) if bool(right.any()) else 0.0
        )
        out["certified.max_radius"] = round(self.max_radius, 6)
        out["certified.noise_samples"] = self.noise_samples
        out["certified.seconds"] = round(self.seconds, 3)
        return out

    def to_report(
        self,
        report: Report,
        *,
        radius: float,
        min_certified_accuracy: float | None,
        check: str = "certified",
    ) -> Report:
        """Metrics, the certified-accuracy curve, the table at each radius and findings."""
        from mlwarden.core.findings import Figure, Series, Table

        report.metrics.update(self.metrics())
        report.headline += [f"certified.accuracy@{r:g}" for r in self.radii]
        report.headline.append("certified.abstain_rate")
        xs, ys = zip(*self.curve(), strict=True)
        report.figures.append(
            Figure(
                id=f"certified-curve-sigma-{self.sigma:g}",
                title=f"Certified accuracy vs L2 radius (smoothing, sigma={self.sigma:g})",
                kind="line",
                x_label="L2 radius (input units)",
                y_label="certified accuracy",
                series=[Series(label=f"sigma={self.sigma:g}", x=list(xs), y=list(ys))],
                caption=(
                    f"{len(self.y)} samples, n0={self.n0}, n={self.n}, alpha={self.alpha:g}; "
                    f"abstained on {self.abstain_rate:.1%}; no radius above "
                    f"{self.max_radius:.3g} can be certified at this n; each certificate "
                    f"holds with probability at least {1 - self.alpha:g} for the smoothed "
                    "classifier"
                ),
            )
        )
        report.tables.append(
            Table(
                id=f"certified-radii-sigma-{self.sigma:g}",
                title=f"Certified accuracy at each L2 radius (sigma={self.sigma:g})",
                columns=["radius", "certified accuracy", "certified samples"],
                rows=[
                    [
                        r,
                        round(self.certified_accuracy(r), 4),
                        int((self.correct & (self.radius >= r)).sum()),
                    ]
                    for r in self.radii
                ],
            )
        )
        report.add(*certification_findings(self, radius, min_certified_accuracy, check=check))
        return report


def certification_findings(
    result: CertificationResult,
    radius: float,
    min_certified_accuracy: float | None,
    *,
    check: str = "certified",
) -> list:
    """INFO: what the certificate covers; HIGH below the required certified accuracy at
    ``radius``; MEDIUM when the smoothed classifier abstains on more than half the samples."""
    from mlwarden.core.findings import Finding, Severity

    certified = result.certified_accuracy(radius)
    evidence = {
        "sigma": result.sigma,
        "n0": result.n0,
        "n": result.n,
        "alpha": result.alpha,
        "radius": radius,
        "certified_accuracy": certified,
        "abstain_rate": result.abstain_rate,
        "base_accuracy": result.base_accuracy,
        "samples": len(result.y),
    }
    findings = [
        Finding(
            id="MLW-CRT-001",
            title="Certificates cover the smoothed classifier, not the base model",
            severity=Severity.INFO,
            detail=(
                f"each radius holds with probability at least {1 - result.alpha:g} for the "
                f"Gaussian-smoothed classifier (sigma={result.sigma:g}, noise not clipped to "
                "the input bounds) that predicts by majority vote over noisy copies; a "
                "deployment serving the base model alone has no certified radius"
            ),
            check=check,
            evidence=evidence,
        )
    ]
    if min_certified_accuracy is not None and certified < min_certified_accuracy:
        findings.append(
            Finding(
                id="MLW-CRT-010",
                title="Certified accuracy below the required minimum",
                severity=Severity.HIGH,
                detail=(
                    f"at L2 radius {radius:g} the smoothed classifier (sigma={result.sigma:g}) "
                    f"is certified correct on {certified:.1%} of {len(result.y)} samples, below "
                    f"the required {min_certified_accuracy:.1%} (base accuracy "
                    f"{result.base_accuracy:.1%}, abstained on {result.abstain_rate:.1%}). "
                    "Train the model with Gaussian noise augmentation at this sigma."
                ),
                check=check,
                evidence={**evidence, "min_certified_accuracy": min_certified_accuracy},
                atlas=ATLAS_EVASION,
                owasp=OWASP_EVASION,
            )
        )
    if result.abstain_rate > 0.5:
        findings.append(
            Finding(
                id="MLW-CRT-011",
                title="The smoothed classifier abstains on most inputs",
                severity=Severity.MEDIUM,
                detail=(
                    f"no class reached a certified majority on {result.abstain_rate:.1%} of the "
                    f"samples: the base model is not robust to noise of sigma={result.sigma:g} "
                    "(train it with Gaussian noise augmentation) or sigma is too large"
                ),
                check=check,
                evidence=evidence,
                atlas=ATLAS_EVASION,
                owasp=OWASP_EVASION,
            )
        )
    return findings


# -- the front door ----------------------------------------------------------------------------
def certify_dataset(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float = 0.25,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    batch_size: int | None = None,
    seed: int = 0,
    first_index: int = 0,
    progress: ProgressCallback = null_progress,
) -> CertificationResult:
    """CERTIFY every ``(x, y)`` and summarise; every parameter is checked before any work."""
    import torch

    check_parameters(sigma, n0, n, alpha)
    radii = sorted({float(r) for r in radii})
    if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
        raise ParameterError(f"radii must be non-negative finite L2 radii, got {radii}")
    smoothed = SmoothedClassifier(model, sigma, batch_size=batch_size, seed=seed)
    if not isinstance(y, torch.Tensor) or len(y) != len(x):
        raise DataError(f"need one label per sample (got {len(x)} samples)")
    model.spec.validate_labels(y)
    x = smoothed._check_inputs(x)
    start = time.perf_counter()
    step = smoothed.batch_size
    base = torch.cat([smoothed._labels(x[i : i + step]).cpu() for i in range(0, len(x), step)])
    prediction, radius, p_lower, count = smoothed.certify(
        x, n0=n0, n=n, alpha=alpha, first_index=first_index, progress=progress
    )
    y = y.cpu().long()
    return CertificationResult(
        sigma=float(sigma),
        n0=n0,
        n=n,
        alpha=float(alpha),
        radii=radii,
        y=y,
        prediction=prediction,
        radius=radius,
        p_lower=p_lower,
        count=count,
        base_correct=base == y,
        noise_samples=smoothed.noise_samples,
        seconds=time.perf_counter() - start,
    )


def require_certify(model: Any) -> None:
    """Refuse, before any work, a model smoothing cannot use (text models, no labels)."""
    require(model, (Capability.LABELS,), by="randomized smoothing")


def run_certify(
    model: Any,
    data: Dataset,
    settings: CertifySettings,
    report: Report,
    *,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> CertificationResult:
    """Certify the first ``settings.samples`` of ``data`` into ``report``; the runner of
    ``mlwarden evaluate certify`` and of the ``certified`` check. ``seed`` is the caller's,
    used unless ``settings.seed`` is set."""
    require_certify(model)
    note_assumptions(report, model, check="certified")
    data = data.take(settings.samples)
    radii = sorted({*settings.radii, settings.at_radius})
    result = certify_dataset(
        model,
        data.x,
        data.y,
        sigma=settings.sigma,
        n0=settings.n0,
        n=settings.n,
        alpha=settings.alpha,
        radii=radii,
        batch_size=settings.batch_size,
        seed=settings.seed if settings.seed is not None else seed,
        progress=progress,
    )
    result.to_report(
        report, radius=settings.at_radius, min_certified_accuracy=settings.min_certified_accuracy
    )
    return result


def save_certificates(result: CertificationResult, path: Path, report: Report) -> None:
    """Write the per-sample ``prediction``, ``radius``, ``p_lower``, ``count``, ``y`` (.npz)."""
    import numpy as np

    from mlwarden.core.findings import Artefact

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        prediction=result.prediction.numpy(),
        radius=result.radius.numpy(),
        p_lower=result.p_lower.numpy(),
        count=result.count.numpy(),
        y=result.y.numpy(),
    )
    report.artefacts.append(
        Artefact(
            name="certificates",
            path=str(path),
            media_type="application/x-npz",
            description="per sample: prediction (-1 abstain), radius, p_lower, count, y",
        )
    )


# -- the audit check ---------------------------------------------------------------------------
@register_check(
    "certified", CertifySettings, title="Certified robustness (randomized smoothing)", cost=90
)
def certified_check(ctx: AuditContext, cfg: CertifySettings) -> None:
    """Certified accuracy at each radius of ``[checks.certified]``, into ``ctx.report``; a
    text model does not apply (`NotApplicable`), a model without labels is skipped."""
    ctx.require(Capability.LABELS)
    run_certify(ctx.model, ctx.data, cfg, ctx.report, seed=ctx.seed, progress=ctx.progress)
