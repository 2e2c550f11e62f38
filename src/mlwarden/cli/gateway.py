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
    text_column: str = typer.Option(
        "text", "--text-column", help="Text model: the column of --data that holds the text."
    ),
    label_column: str = typer.Option(
        "label", "--label-column", help="Text model: the column of --data with the labels."
    ),
    seed: int = SeedOption,
) -> None:
    """Fit on training data; the threshold rejects about FRR of in-distribution inputs.

    For a text classifier (a Hugging Face folder), --data is a .jsonl/.csv/.tsv of texts and
    both are fitted on the sentence embeddings the gateway computes (`mlwarden.gateway.text`).
    """
    from mlwarden.config import resolve_spec
    from mlwarden.core.contract import require
    from mlwarden.core.errors import ParameterError
    from mlwarden.defenses.detection.ood import EnergyDetector, MahalanobisDetector, save_detector
    from mlwarden.gateway.monitoring import calibrate_knn_threshold
    from mlwarden.gateway.runner import VALIDATOR_NEEDS
    from mlwarden.gateway.text import (
        SENTENCE_EMBEDDING,
        check_text_model,
        serves_text,
        text_features,
    )
    from mlwarden.io.data import load_data
    from mlwarden.io.models import load_model
    from mlwarden.io.text_data import load_text_data

    if method not in ("mahalanobis", "energy"):  # before loading anything
        raise ParameterError(f"--method must be 'mahalanobis' or 'energy', got '{method}'")
    classifier = load_model(
        model, factory=factory, spec=resolve_spec(spec, config), allow=tuple(allow)
    )
    detector: MahalanobisDetector | EnergyDetector
    if method == "mahalanobis":
        detector = MahalanobisDetector(layer=layer, false_rejection_rate=frr, seed=seed)
    else:
        detector = EnergyDetector(false_rejection_rate=frr, seed=seed)
    if serves_text(classifier):
        if layer is not None:
            raise ParameterError("--layer: a text model's validator is fitted on its sentence "
                                 "embeddings; remove --layer")
        check_text_model(classifier)
        texts = load_text_data(data, text_column=text_column, label_column=label_column,
                               class_names=classifier.spec.class_names)
        logits, features = text_features(classifier, texts.texts)  # type: ignore[arg-type]
        if isinstance(detector, MahalanobisDetector):
            labels = texts.labels if texts.labels is not None else logits.argmax(1)
            detector.fit_features(features, labels, layer=SENTENCE_EMBEDDING)
        else:
            detector.fit_logits(logits)
    else:
        require(classifier, VALIDATOR_NEEDS, by="an OOD validator",
                hint="serve it without a validator")
        dataset = load_data(data, spec=classifier.spec)
        detector.fit(classifier, dataset.x, dataset.y)
        features = dataset.x
    threshold = calibrate_knn_threshold(features, knn_k, knn_quantile)
    save_detector(detector, out, {"query_attack_threshold": threshold, "query_attack_k": knn_k})
    typer.echo(
        f"wrote {out}: {method} threshold {detector.threshold_:.4g} "
        f"(FRR {frr:g} on a held-out split), query-attack k-NN threshold {threshold:.4g}"
    )


# -- blocks ---------------------------------------------------------------------------------

blocks_app = typer.Typer(
    help="List and lift the blocks and throttles the attack monitors set.", no_args_is_help=True
)
gateway_app.add_typer(blocks_app, name="blocks")

ADMIN_KEY_ENV = "MLWARDEN_ADMIN_KEY"
_BlocksConfig = typer.Option(
    Path("mlwarden.toml"), "--config", "-c",
    help="The gateway's mlwarden.toml: its [gateway.rate_limit] storage holds the blocks.",
)
_Storage = typer.Option(
    None, "--storage", help="redis://host:port to use instead of the config's storage."
)
_Url = typer.Option(
    None, "--url", help="Gateway URL for memory:// storage (default: the config's host:port)."
)


class _Blocks:
    """Where the blocks of a gateway live: its Redis, or (memory://) the gateway process
    itself, reached through its admin routes with an ``admin`` key from $MLWARDEN_ADMIN_KEY."""

    def __init__(self, config: Path, storage: str | None, url: str | None) -> None:
        from mlwarden.core.errors import ConfigError
        from mlwarden.gateway.config import GatewayConfig, load_serve_config

        if not config.exists() and storage is None and url is None:
            raise ConfigError(f"config file '{config}' does not exist; give --config, "
                              "--storage redis://... or --url")
        gateway = load_serve_config(config)[1] if config.exists() else GatewayConfig()
        self.storage = storage or gateway.rate_limit.storage
        self.prefix = gateway.rate_limit.key_prefix
        self.url = url or f"http://{gateway.host}:{gateway.port}"
        self.remote = self.storage.startswith(("redis://", "rediss://"))
        self.monitor_storage = gateway.monitoring.storage_uri(self.storage)

    def _http(self, method: str, path: str) -> object:
        import os

        import httpx

        from mlwarden.core.errors import InputError

        key = os.environ.get(ADMIN_KEY_ENV)
        if not key:
            raise InputError(
                f"blocks in memory:// storage live in the gateway process: set {ADMIN_KEY_ENV} "
                "to a key with the 'admin' scope (`mlwarden keys create --scope admin`), or "
                "use redis:// storage")
        try:
            r = httpx.request(method, f"{self.url.rstrip('/')}{path}",
                              headers={"Authorization": f"Bearer {key}"}, timeout=10)
        except httpx.HTTPError as exc:
            raise InputError(f"cannot reach the gateway at {self.url}: {exc}") from None
        if r.status_code != 200:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:200]
            raise InputError(f"the gateway answered {r.status_code}: {message}")
        return r.json()

    def list(self) -> list[dict[str, object]]:
        from dataclasses import asdict

        from mlwarden.gateway.ratelimit import ClientFlags

        if self.remote:
            return [asdict(b) for b in ClientFlags(self.storage, self.prefix).blocks()]
        return self._http("GET", "/v1/admin/blocks")["blocks"]  # type: ignore[index, no-any-return]

    def lift(self, client: str) -> list[str]:
        from urllib.parse import quote

        from mlwarden.gateway.ratelimit import ClientFlags

        if self.remote:
            from mlwarden.gateway.monitor_store import monitor_store

            lifted = ClientFlags(self.storage, self.prefix).lift(client)
            # as the admin route does: the replicas' shared monitors start the client over
            store = monitor_store(self.monitor_storage, self.prefix)
            if store is not None:
                store.reset(client)
            return lifted
        answer = self._http("DELETE", f"/v1/admin/blocks/{quote(client, safe='')}")
        return list(answer["lifted"])  # type: ignore[index]


@blocks_app.command("list")
def blocks_list(config: Path = _BlocksConfig, storage: str | None = _Storage,
                url: str | None = _Url) -> None:
    """Blocked and throttled clients (key prefixes, or addr:<address>), with time left."""
    blocks = _Blocks(config, storage, url).list()
    if not blocks:
        typer.echo("no blocked or throttled clients")
        return
    for b in blocks:
        typer.echo(f"{b['kind']:<9} {b['client']:<24} {b['seconds_left']:>7} s left  "
                   f"since {b['since'] or '?'}  {b['reason']}")


@blocks_app.command("lift")
def blocks_lift(
    client: str = typer.Argument(..., help="Key prefix, or addr:<address>, as `list` shows."),
    config: Path = _BlocksConfig, storage: str | None = _Storage, url: str | None = _Url,
) -> None:
    """Lift every block and throttle of one client; it is answered again at once."""
    from mlwarden.core.errors import InputError

    lifted = _Blocks(config, storage, url).lift(client)
    if not lifted:
        raise InputError(f"'{client}' is neither blocked nor throttled")
    typer.echo(f"lifted {' and '.join(lifted)} for {client}")
