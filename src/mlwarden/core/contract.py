"""The model contract: what kind of model a user handed us, and what each piece of work needs.

A model is one of a few *kinds*, and each kind *offers* a set of capabilities. Every
attack, detector and check declares the capabilities it *requires*; `require` compares
the two before any work starts and fails with one message that names both sides
("Neural Cleanse needs gradients; 'model.onnx' is a score oracle"). This replaces
``isinstance`` chains scattered through the code, in the way ART's
``_estimator_requirements`` does: requirements are data, checked once, up front.

Kinds: a white-box tensor `Classifier`, a score `Oracle` (probabilities per query), a
label-only `Oracle`, and on the text path (`mlwarden.core.text`) a white-box
`TextClassifier` (strings in, owns its tokenizer) and a `TextEncoder` (pooled sentence
embeddings, no labels).

What a model takes in is a capability too: `Capability.TENSOR_INPUTS` or
`Capability.TEXT_INPUTS`. A declaration that names neither implies tensor inputs, so every
attack and detector written for tensors refuses a text model without a change, and text
code declares `TEXT_INPUTS` to refuse tensor models ("PGD needs tensor inputs; 'minilm' is
a text encoder").

No torch import at module level: the CLI checks requirements before loading anything heavy.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import ParameterError

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.findings import Finding, Report
    from mlwarden.core.oracle import Oracle, OracleOutput


class Capability(str, Enum):
    """One thing a model can offer to the code that uses it."""

    GRADIENTS = "gradients"
    """A differentiable forward pass on continuous inputs (white-box attacks, trigger search)."""
    FEATURES = "hidden features"
    """Intermediate activations through forward hooks (activation clustering, OOD, pruning)."""
    TRAINABLE = "trainable weights"
    """Parameters that can be copied and fine-tuned (students, mitigation, shadow models)."""
    SCORES = "class scores"
    """A probability per class for each query (Square, score-based extraction, LiRA)."""
    LABELS = "labels"
    """The top-1 label for each query (HopSkipJump, label-only extraction)."""
    EMBEDDING_GRADIENTS = "gradients through token embeddings"
    """A differentiable forward pass from token embeddings (text attacks, text trigger search)."""
    EMBEDDINGS = "pooled embeddings"
    """One vector per input (linear probes, OOD on sentence embeddings)."""
    TENSOR_INPUTS = "tensor inputs"
    """Takes float tensors of a fixed shape; implied by any declaration naming no input kind."""
    TEXT_INPUTS = "text inputs"
    """Takes lists of strings and tokenizes them itself."""


INPUT_CAPABILITIES = frozenset({Capability.TENSOR_INPUTS, Capability.TEXT_INPUTS})


class ModelKind(str, Enum):
    """The kinds of model mlwarden works with; the value reads well in a sentence."""

    CLASSIFIER = "white-box classifier"
    SCORE_ORACLE = "score oracle"
    LABEL_ORACLE = "label-only oracle"
    TEXT_CLASSIFIER = "text classifier"
    TEXT_ENCODER = "text encoder"
    TEXT_SCORE_ORACLE = "text score oracle"
    TEXT_LABEL_ORACLE = "text label-only oracle"


_C = Capability
OFFERS: dict[ModelKind, frozenset[Capability]] = {
    ModelKind.CLASSIFIER: frozenset(
        {_C.GRADIENTS, _C.FEATURES, _C.TRAINABLE, _C.SCORES, _C.LABELS, _C.TENSOR_INPUTS}
    ),
    ModelKind.SCORE_ORACLE: frozenset({_C.SCORES, _C.LABELS, _C.TENSOR_INPUTS}),
    ModelKind.LABEL_ORACLE: frozenset({_C.LABELS, _C.TENSOR_INPUTS}),
    ModelKind.TEXT_CLASSIFIER: frozenset(
        {_C.EMBEDDING_GRADIENTS, _C.FEATURES, _C.TRAINABLE, _C.SCORES, _C.LABELS, _C.TEXT_INPUTS}
    ),
    ModelKind.TEXT_ENCODER: frozenset(
        {_C.EMBEDDING_GRADIENTS, _C.FEATURES, _C.TRAINABLE, _C.EMBEDDINGS, _C.TEXT_INPUTS}
    ),
    ModelKind.TEXT_SCORE_ORACLE: frozenset({_C.SCORES, _C.LABELS, _C.TEXT_INPUTS}),
    ModelKind.TEXT_LABEL_ORACLE: frozenset({_C.LABELS, _C.TEXT_INPUTS}),
}
"""What each kind offers. A white-box classifier can always be queried like an oracle."""


def takes_text(model: Any) -> bool:
    """Whether ``model`` takes lists of strings (a text model or a text oracle)."""
    return Capability.TEXT_INPUTS in offers(model)


def input_kind(model: Any) -> Capability:
    """`Capability.TEXT_INPUTS` or `Capability.TENSOR_INPUTS`: what ``model`` takes in, for a
    declaration that works on both kinds of input."""
    return Capability.TEXT_INPUTS if takes_text(model) else Capability.TENSOR_INPUTS


def kind_of(model: Any) -> ModelKind:
    """The kind of ``model``; anything that is neither a `Classifier` nor an `Oracle` is refused."""
    if is_model(model):
        return model.model_kind  # type: ignore[no-any-return]
    raise ParameterError(
        f"expected an mlwarden Classifier or Oracle, got {type(model).__name__}; wrap an "
        "nn.Module with mlwarden.io.from_module(module, spec)"
    )


def is_model(value: Any) -> bool:
    """Whether ``value`` is a model of a known kind (a `Classifier` or an `Oracle`)."""
    return isinstance(getattr(value, "model_kind", None), ModelKind)


def offers(model: Any) -> frozenset[Capability]:
    """The capabilities ``model`` offers."""
    return OFFERS[kind_of(model)]


def describe(model: Any) -> str:
    """``'model.onnx' is a score oracle``: the model's name and kind, for messages."""
    name = getattr(model, "name", None) or type(model).__name__
    kind = kind_of(model).value
    article = "an" if kind[0] in "aeiou" else "a"
    return f"'{name}' is {article} {kind}"


def missing(model: Any, needs: Iterable[Capability]) -> list[Capability]:
    """The capabilities of ``needs`` that ``model`` lacks, in declaration order.

    ``needs`` naming no input kind means tensor inputs (`Capability.TENSOR_INPUTS`).
    """
    have = offers(model)
    wanted = set(needs)
    if not wanted & INPUT_CAPABILITIES:
        wanted.add(Capability.TENSOR_INPUTS)
    return [cap for cap in Capability if cap in wanted and cap not in have]


def require(model: Any, needs: Iterable[Capability], *, by: str, hint: str = "") -> None:
    """Raise `ParameterError` naming ``by`` and the model unless it offers all of ``needs``.

    Call it before any work: a mismatch then costs nothing and says what to do instead.
    """
    lacking = missing(model, needs)
    if lacking:
        need = ", ".join(cap.value for cap in lacking)
        raise ParameterError(f"{by} needs {need}; {describe(model)}{f' ({hint})' if hint else ''}")


def as_classifier(model: Any, *, by: str, hint: str = "") -> Classifier:
    """``model`` as a white-box `Classifier`, or the requirement error for ``by``."""
    require(model, (Capability.GRADIENTS,), by=by, hint=hint)
    return model  # type: ignore[no-any-return]


def as_oracle(
    model: Any,
    output: OracleOutput = "probabilities",
    *,
    by: str = "",
    batch_size: int = 512,
    text: bool = False,
) -> Oracle:
    """``model`` seen through queries: a classifier is wrapped, an oracle is reused.

    With ``text=True`` (callers that handle strings as well as tensors) a `TextClassifier`
    becomes a `TextClassifierOracle` (strings in); without it a text model is refused, as
    every tensor attack must refuse it.

    ``output="labels"`` gives a label-only view (of a score oracle too); asking a label-only
    oracle for probabilities is the requirement error for ``by``.
    """
    from mlwarden.core.oracle import ClassifierOracle, LabelOnlyOracle, TextClassifierOracle

    needed = Capability.SCORES if output == "probabilities" else Capability.LABELS
    require(model, (needed, input_kind(model)) if text else (needed,), by=by or "this attack")
    kind = kind_of(model)
    if kind is ModelKind.CLASSIFIER:
        return ClassifierOracle(model, output=output, batch_size=batch_size)
    if kind is ModelKind.TEXT_CLASSIFIER:
        from mlwarden.core.text import DEFAULT_TEXT_BATCH

        return TextClassifierOracle(
            model, output=output, batch_size=min(batch_size, DEFAULT_TEXT_BATCH)
        )
    if output == "labels" and kind in (ModelKind.SCORE_ORACLE, ModelKind.TEXT_SCORE_ORACLE):
        return LabelOnlyOracle(model)
    return model  # type: ignore[no-any-return]


# -- what a loader had to assume ----------------------------------------------------------------
SPEC_ASSUMED_ID = "MLW-SPEC-001"


def assumption_finding(model: Any, check: str = "") -> Finding | None:
    """An info finding that states what the loader assumed about the input spec, if anything.

    A plain ``torch.export`` file says its input shape and class count but not its value
    bounds; attack budgets are relative to those bounds, so a report that used assumed
    bounds must say so rather than silently measure the wrong thing.
    """
    notes = tuple(getattr(model, "spec_assumptions", ()) or ())
    if not notes:
        return None
    from mlwarden.core.findings import Finding, Severity

    spec = model.spec
    return Finding(
        id=SPEC_ASSUMED_ID,
        title="Input spec partly assumed",
        severity=Severity.INFO,
        detail=(
            "; ".join(notes)
            + ". Attack budgets are relative to these bounds: pass --spec (or a [spec] table "
            "in mlwarden.toml) with the model's real bounds if they differ."
        ),
        check=check,
        evidence={
            "shape": list(spec.shape),
            "bounds": list(spec.bounds),
            "num_classes": spec.num_classes,
            "assumed": list(notes),
        },
        location=getattr(model, "name", None),
    )


def note_assumptions(report: Report, model: Any, check: str = "") -> None:
    """Add `assumption_finding` to ``report`` once (several checks may use the same model)."""
    finding = assumption_finding(model, check)
    if finding is None or any(f.id == SPEC_ASSUMED_ID for f in report.findings):
        return
    report.findings.append(finding)
