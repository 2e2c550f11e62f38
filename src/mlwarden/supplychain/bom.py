"""An AI bill of materials: a CycloneDX 1.6 ML-BOM of a model folder or file.

The BOM holds one ``machine-learning-model`` component: a nested ``file`` component for
every file with its SHA-256, the model card data the folder states (``config.json``:
architecture and family; the README's front matter: licence, datasets, pipeline tag),
the scanner's verdict and findings, and the signature status. Scan and signature go
in ``mlwarden:*`` properties, CycloneDX's own extension point.

``cyclonedx-python-lib`` builds and serialises the BOM and validates it against the
schema it bundles. It has no model for ``modelCard`` yet (its `Component` leaves it
out), so the model card is added to the serialised JSON, and the whole document is
validated after that: what is written is what was validated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlwarden.core.errors import DependencyError, InputError, first_line

__all__ = ["ModelCard", "build_bom", "read_model_card", "validate_bom", "write_bom"]

SPEC_VERSION = "1.6"
_PREFIX = "mlwarden"


@dataclass
class ModelCard:
    """What a model folder says about itself; each field None when it does not say."""

    architecture: str | None = None  # config.json "architectures"[0], e.g. BertModel
    family: str | None = None  # config.json "model_type", e.g. bert
    task: str | None = None  # README front matter "pipeline_tag"
    license: str | None = None  # README front matter "license"
    datasets: tuple[str, ...] = ()  # README front matter "datasets"
    library: str | None = None  # README front matter "library_name"

    def model_parameters(self) -> dict[str, Any]:
        """The ``modelCard.modelParameters`` object of CycloneDX 1.6 (only what is known)."""
        out: dict[str, Any] = {}
        if self.task:
            out["task"] = self.task
        if self.family:
            out["architectureFamily"] = self.family
        if self.architecture:
            out["modelArchitecture"] = self.architecture
        if self.datasets:
            out["datasets"] = [{"type": "dataset", "name": name} for name in self.datasets]
        return out


def read_model_card(path: str | Path) -> ModelCard:
    """Model card data from ``config.json`` and the front matter of ``README.md``.

    Files that are absent, unreadable or malformed contribute nothing: the BOM states
    only what the folder says.
    """
    folder = Path(path)
    card = ModelCard()
    if not folder.is_dir():
        return card
    config = _json_object(folder / "config.json")
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        card.architecture = architectures[0]
    if isinstance(config.get("model_type"), str):
        card.family = config["model_type"]
    front = _front_matter(folder / "README.md")
    if isinstance(front.get("pipeline_tag"), str):
        card.task = front["pipeline_tag"]
    if isinstance(front.get("license"), str):
        card.license = front["license"]
    if isinstance(front.get("library_name"), str):
        card.library = front["library_name"]
    datasets = front.get("datasets")
    if isinstance(datasets, str):
        datasets = [datasets]
    if isinstance(datasets, list):
        card.datasets = tuple(str(d) for d in datasets if isinstance(d, str | int | float))
    return card


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _front_matter(path: Path) -> dict[str, Any]:
    """The YAML block between the first two ``---`` lines of a model card."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
        data = yaml.safe_load("\n".join(lines[1:end]))
    except (StopIteration, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _cyclonedx() -> None:
    try:
        import cyclonedx  # noqa: F401
    except ImportError as exc:
        raise DependencyError(
            f"the ML-BOM needs 'cyclonedx-python-lib' ({first_line(exc)})",
            hint="pip install 'mlwarden[provenance]'",
        ) from exc


def build_bom(
    path: str | Path,
    *,
    name: str | None = None,
    version: str | None = None,
    key: str | Path | None = None,
    allow: Sequence[str] = (),
) -> dict[str, Any]:
    """The ML-BOM of ``path`` as a JSON document, validated against CycloneDX 1.6.

    ``key`` (a PEM public key) verifies the model's signature; without it a signature
    that is present is reported as not verified.
    """
    _cyclonedx()
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    from mlwarden import __version__
    from mlwarden.supplychain.scanner import scan_path
    from mlwarden.supplychain.signing import signature_path_for

    model = Path(path)
    if not model.exists():
        raise InputError(f"model path '{model}' does not exist")
    sig = signature_path_for(model)
    scan = scan_path(model, allow=allow, digest=True)
    root = model.resolve()
    scan.files = [f for f in scan.files if Path(f.path).resolve() != sig.resolve()]
    card = read_model_card(model)

    def rel(file_path: str) -> str:
        p = Path(file_path).resolve()
        return p.name if p == root else str(p.relative_to(root))

    files = [
        Component(
            type=ComponentType.FILE,
            name=rel(f.path),
            bom_ref=f"file:{rel(f.path)}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=f.sha256 or "")],
            properties=[
                Property(name=f"{_PREFIX}:scan:format", value=f.format),
                Property(name=f"{_PREFIX}:scan:verdict", value=f.verdict.value),
                Property(name=f"{_PREFIX}:size", value=str(f.size)),
            ],
        )
        for f in scan.files
    ]
    properties = [
        Property(name=f"{_PREFIX}:scan:verdict", value=scan.verdict.value),
        Property(name=f"{_PREFIX}:scan:files", value=str(len(scan.files))),
        *(
            Property(
                name=f"{_PREFIX}:scan:finding",
                value=f"{f.id} {f.severity.value} {f.location}: {f.detail}",
            )
            for f in scan.all_findings()
        ),
        Property(name=f"{_PREFIX}:signature:status", value=_signature_status(model, sig, key)),
    ]
    if card.library:
        properties.append(Property(name=f"{_PREFIX}:model:library", value=card.library))
    references = []  # relative IRIs: the files beside the BOM's subject
    if sig.is_file():
        references.append(
            ExternalReference(type=ExternalReferenceType.DIGITAL_SIGNATURE, url=XsUri(sig.name))
        )
    if model.is_dir() and (model / "README.md").is_file():
        references.append(
            ExternalReference(type=ExternalReferenceType.MODEL_CARD, url=XsUri("README.md"))
        )
    licenses = [LicenseFactory().make_from_string(card.license)] if card.license else []
    single = model.is_file()
    component = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=name or root.name,
        version=version,
        bom_ref="model",
        hashes=files[0].hashes if single else [],
        licenses=licenses,
        properties=properties,
        components=[] if single else files,
        external_references=references,
    )
    bom = Bom(components=[component])
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="mlwarden", version=__version__)
    )
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    parameters = card.model_parameters()
    if parameters:
        for entry in document["components"]:
            if entry.get("bom-ref") == "model":
                entry["modelCard"] = {"modelParameters": parameters}
    validate_bom(document)
    return document


def _signature_status(model: Path, sig: Path, key: str | Path | None) -> str:
    """``verified (...)``, ``invalid: ...``, ``present, not verified`` or ``unsigned``."""
    from mlwarden.core.errors import UnsafeArtefactError
    from mlwarden.supplychain.signing import verify_model

    if not sig.is_file():
        return "unsigned"
    if key is None:
        return f"present ({sig.name}), not verified: no public key given"
    try:
        check = verify_model(model, key=key, signature=sig)
    except UnsafeArtefactError as exc:
        return f"invalid: {exc.message}"
    return f"verified: signed by {check.signer}"


def validate_bom(document: dict[str, Any]) -> None:
    """Refuse a document that is not valid CycloneDX 1.6 JSON (the library's bundled schema)."""
    _cyclonedx()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    try:
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    except Exception as exc:  # noqa: BLE001 - a missing validator extra, named below
        raise DependencyError(
            f"cannot validate the BOM: {first_line(exc)}",
            hint="pip install 'cyclonedx-python-lib[json-validation]'",
        ) from exc
    if error is not None:
        raise InputError(f"the ML-BOM is not valid CycloneDX {SPEC_VERSION}: {first_line(error)}")


def write_bom(document: dict[str, Any], output: str | Path) -> Path:
    """Write ``document`` as indented JSON, making the folder if needed."""
    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write '{out}': {exc.strerror or exc}") from None
    return out
