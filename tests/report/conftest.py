"""A realistic audit report to render: every severity, every check status, every figure kind.

Renderers only format, so the report is built from data shaped like what the checks
emit (robustness curves, Neural Cleanse triggers and masks, per-class tables) rather
than by running the checks; `test_report_integration.py` renders a report produced by
a real check on a real model as well.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.findings import (
    Artefact,
    CheckResult,
    Figure,
    Finding,
    ImageData,
    Report,
    Series,
    Table,
)


def _trigger_and_mask(target: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An 8x8 reverse-engineered trigger and mask: a bright corner patch plus noise."""
    mask = np.clip(rng.normal(0.05, 0.03, (8, 8)), 0, 1)
    pattern = np.clip(rng.uniform(0.0, 0.4, (8, 8)), 0, 1)
    if target == 7:  # the backdoored class: a clean 3x3 patch, as BadNets plants
        mask[5:8, 5:8] = 0.95
        pattern[5:8, 5:8] = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    else:
        mask = np.clip(mask + rng.uniform(0.0, 0.35, (8, 8)) * (rng.random((8, 8)) > 0.6), 0, 1)
    return pattern, mask


def build_sample_report() -> Report:
    rng = np.random.default_rng(0)
    eps = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]
    images: list[ImageData] = []
    for target in (1, 3, 7, 9):
        pattern, mask = _trigger_and_mask(target, rng)
        images.append(ImageData(label=f"trigger → {target}", pixels=pattern.round(3).tolist()))
        images.append(ImageData(label=f"mask → {target}", pixels=mask.round(3).tolist()))
    rgb = np.stack([np.linspace(0, 1, 64).reshape(8, 8)] * 3, axis=-1)
    rgb[..., 0] = 1 - rgb[..., 0]
    images.append(ImageData(label="RGB patch", pixels=rgb.round(3).tolist()))

    fpr = np.linspace(0, 1, 21)
    per_class = [
        [str(c), 45, round(0.93 + 0.06 * rng.random(), 3), round(0.05 + 0.25 * rng.random(), 3)]
        for c in range(10)
    ]
    return Report(
        title="Audit of digits-cnn (teacher)",
        created_at="2026-11-22T20:30:00+00:00",
        subject={
            "model": "models/teacher.pt2",
            "data": "data/digits_test.npz",
            "input_spec": "1x8x8 float32 in [0, 1], 10 classes",
            "config": "mlwarden.toml",
        },
        metrics={
            "clean_accuracy": 0.9733,
            "robust_accuracy_fgsm": 0.4111,
            "robust_accuracy_pgd": 0.12,
            "attack_success_rate_pgd": 0.8767,
            "anomaly_index": 3.41,
            "membership_auc": 0.62,
            "samples": 450,
            "gradient_evaluations": 45000,
            "extraction_agreement": None,
        },
        checks=[
            CheckResult(
                name="accuracy",
                status="passed",
                duration_s=1.21,
                summary="clean accuracy 97.3% ≥ 90.0%",
            ),
            CheckResult(
                name="evasion",
                status="failed",
                duration_s=14.52,
                summary="PGD robust accuracy 12.0% < required 40.0%",
            ),
            CheckResult(
                name="backdoor",
                status="failed",
                duration_s=8.2,
                summary="class 7 is an outlier (anomaly index 3.41 > 2.0)",
            ),
            CheckResult(
                name="supplychain",
                status="failed",
                duration_s=0.08,
                summary="1 unsafe pickle import",
            ),
            CheckResult(
                name="extraction",
                status="error",
                duration_s=0.5,
                summary="OracleError: gateway answered HTTP 500 for /v1/predict",
            ),
            CheckResult(
                name="membership",
                status="skipped",
                duration_s=0.0,
                summary="the model is a black-box oracle; needs gradients",
            ),
        ],
        findings=[
            Finding(
                id="MLW-EVA-001",
                title="FGSM robust accuracy below 50% at eps=0.1",
                severity="medium",
                check="evasion",
                detail="Robust accuracy 41.1% under FGSM (eps=0.1, L-inf) on 450 samples.",
                evidence={"attack": "FGSM", "eps": 0.1, "robust_accuracy": 0.4111},
                atlas=["AML.T0043"],
                owasp=["ML01"],
            ),
            Finding(
                id="MLW-SUP-001",
                title="Pickle imports posix.system",
                severity="critical",
                check="supplychain",
                detail="Unpickling this file runs a shell command: the global "
                "'posix.system' is called by a REDUCE opcode.",
                evidence={"global": "posix.system", "opcode": "REDUCE", "offset": 122},
                atlas=["AML.T0010", "AML.T0011"],
                owasp=["ML06"],
                location="models/teacher.pt::archive/data.pkl",
            ),
            Finding(
                id="MLW-BD-001",
                title="Backdoor trigger found for class 7",
                severity="high",
                check="backdoor",
                detail="Neural Cleanse: the reversed trigger for class 7 has an L1 norm of "
                "9.0, 3.41 median absolute deviations below the other classes.",
                evidence={
                    "target_class": 7,
                    "anomaly_index": 3.41,
                    "mask_l1": 9.0,
                    "median_l1": 21.7,
                    "flip_rate": 0.98,
                },
                atlas=["AML.T0018"],
                owasp=["ML10"],
            ),
            Finding(
                id="MLW-EVA-002",
                title="PGD robust accuracy 12.0% at eps=0.1",
                severity="high",
                check="evasion",
                detail="40-step PGD (eps=0.1, alpha=0.01) fools the model on 87.7% of "
                "correctly classified samples.",
                evidence={
                    "attack": "PGD",
                    "eps": 0.1,
                    "steps": 40,
                    "robust_accuracy": 0.12,
                    "per_eps": dict(
                        zip(map(str, eps), [0.97, 0.9, 0.61, 0.12, 0.04, 0.01, 0.0], strict=True)
                    ),
                },
                atlas=["AML.T0043"],
                owasp=["ML01"],
            ),
            Finding(
                id="MLW-GW-003",
                title="Rate limit allows 1000 requests/minute per key",
                severity="low",
                check="gateway",
                detail="Model extraction needs ~10k queries; this limit allows it in 10 minutes.",
                atlas=["AML.T0024"],
                owasp=["ML05"],
                location="POST /v1/predict",
            ),
            Finding(
                id="MLW-ACC-000",
                title="Clean accuracy 97.3%",
                severity="info",
                check="accuracy",
                evidence={"clean_accuracy": 0.9733},
            ),
        ],
        figures=[
            Figure(
                id="robustness-curve",
                title="Robust accuracy vs. perturbation budget",
                kind="line",
                x_label="eps (L-inf)",
                y_label="accuracy",
                series=[
                    Series(label="FGSM", x=eps, y=[0.97, 0.91, 0.72, 0.41, 0.29, 0.22, 0.15]),
                    Series(label="PGD-40", x=eps, y=[0.97, 0.9, 0.61, 0.12, 0.04, 0.01, 0.0]),
                ],
                caption="Accuracy on 450 test digits as the attack budget grows.",
            ),
            Figure(
                id="membership-roc",
                title="Membership inference ROC",
                kind="line",
                x_label="false positive rate",
                y_label="true positive rate",
                series=[
                    Series(
                        label="loss threshold (AUC 0.62)",
                        x=fpr.tolist(),
                        y=np.clip(fpr**0.6, 0, 1).round(3).tolist(),
                    ),
                    Series(label="chance", x=[0.0, 1.0], y=[0.0, 1.0]),
                ],
            ),
            Figure(
                id="asr-per-class",
                title="PGD attack success rate per class",
                kind="bar",
                x_label="class",
                y_label="success rate",
                series=[
                    Series(
                        label="PGD eps=0.1",
                        x=list(range(10)),
                        y=[round(0.7 + 0.25 * rng.random(), 3) for _ in range(10)],
                    )
                ],
            ),
            Figure(
                id="nc-triggers",
                title="Neural Cleanse: reversed triggers and masks",
                kind="images",
                images=images,
                caption="Class 7's mask is a compact 3x3 patch: a planted trigger.",
            ),
        ],
        tables=[
            Table(
                id="per-class",
                title="Accuracy per class",
                columns=["class", "samples", "clean accuracy", "robust accuracy (PGD)"],
                rows=per_class,
            ),
        ],
        artefacts=[
            Artefact(
                name="adversarial examples",
                path="artefacts/pgd_eps0.1.npz",
                media_type="application/x-npz",
                description="PGD adversarial batch",
            ),
            Artefact(
                name="trigger for class 7", path="artefacts/trigger_7.png", media_type="image/png"
            ),
        ],
    )


@pytest.fixture
def sample_report() -> Report:
    return build_sample_report()


@pytest.fixture(scope="module")
def module_sample_report() -> Report:
    """The sample report, built once per module for tests that only read it."""
    return build_sample_report()
