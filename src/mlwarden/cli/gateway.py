"""``mlwarden gateway fit-validator``: fit the OOD validator and the query-attack threshold.

Writes one ``.safetensors`` file that ``[gateway.validation] validator`` points at.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import AllowOption, ConfigOption, FactoryOption, SeedOption, SpecOption

gateway_app = typer.Typer(help="Prepare the serving gateway.", no_args_is_help=True)


@gateway_app.command("fit-validator")
def fit_validator(
    model: Path = typer.Option(..., "--model", "-m", help="Model file (.pt2 or weights)."),
    data: str = typer.Option(
        ..., "--data", "-d", help="Training data: .npz/.npy/.csv/folder or a built-in name."
    ),
    out: Path = typer.Option(
        Path("validator.safetensors"), "--out", "-o", help="Where to write the validator."
    ),
    factory: str = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    allow: list[str] = AllowOption,
    method: str = typer.Option(
        "mahalanobis", "--method", help="mahalanobis (features) or energy (logits)."
    ),
    layer: str = typer.Option(None, "--layer", help="Feature layer (default: penultimate)."),
    frr: float = typer.Option(
        0.01, "--frr", help="False rejection rate the threshold is calibrated to."
    ),
    knn_k: int = typer.Option(10, "--knn-k", help="k of the query-attack detector."),
    knn_quantile: float = typer.Option(
        0.001, "--knn-quantile", help="Benign quantile for the query-attack threshold."
    ),
    seed: int = SeedOption,
) -> None:
    """Fit on training data; the threshold rejects about FRR of in-distribution inputs."""
    from mlwarden.config import resolve_spec
    from mlwarden.core.contract import require
    from mlwarden.core.errors import ParameterError
    from mlwarden.defenses.detection.ood import EnergyDetector, MahalanobisDetector, save_detector
    from mlwarden.gateway.monitoring import calibrate_knn_threshold
    from mlwarden.gateway.runner import VALIDATOR_NEEDS
    from mlwarden.io.data import load_data
    from mlwarden.io.models import load_model

    if method not in ("mahalanobis", "energy"):  # before loading anything
        raise ParameterError(f"--method must be 'mahalanobis' or 'energy', got '{method}'")
    classifier = load_model(
        model, factory=factory, spec=resolve_spec(spec, config), allow=tuple(allow)
    )
    require(classifier, VALIDATOR_NEEDS, by="an OOD validator",
            hint="serve it without a validator")
    dataset = load_data(data, spec=classifier.spec)
    detector: MahalanobisDetector | EnergyDetector
    if method == "mahalanobis":
        detector = MahalanobisDetector(layer=layer, false_rejection_rate=frr, seed=seed)
    else:
        detector = EnergyDetector(false_rejection_rate=frr, seed=seed)
    detector.fit(classifier, dataset.x, dataset.y)
    threshold = calibrate_knn_threshold(dataset.x, knn_k, knn_quantile)
    save_detector(detector, out, {"query_attack_threshold": threshold, "query_attack_k": knn_k})
    typer.echo(
        f"wrote {out}: {method} threshold {detector.threshold_:.4g} "
        f"(FRR {frr:g} on a held-out split), query-attack k-NN threshold {threshold:.4g}"
    )
