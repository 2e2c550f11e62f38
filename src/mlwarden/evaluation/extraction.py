"""Model-extraction stress test: how much of the model can an attacker copy per query?"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from mlwarden.attacks.extraction import ExtractionResult, KnockoffExtraction
from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.core.contract import as_oracle, note_assumptions
from mlwarden.core.errors import ConfigError, DataError, ParameterError
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.oracle import Oracle
    from mlwarden.io.dataset import Dataset
    from mlwarden.io.text_data import TextDataset


class ExtractionSettings(BaseModel):
    """The simulated thief's means and when its copy is a finding: the one home of each default.

    ``mlwarden attack extraction`` builds it from the flags given, ``[checks.extraction]``
    from its table; both hand it to `run_extraction`.
    """

    model_config = ConfigDict(extra="forbid")

    budget: int = Field(1000, gt=0, description="queries (samples) the thief may send")
    strategy: Literal["random", "natural", "synthetic"] = Field(
        "natural", description="where the queries come from"
    )
    access: Literal["scores", "labels"] = Field(
        "scores", description="what the thief sees of each answer"
    )
    epochs: int = Field(30, gt=0, description="training epochs of the copy")
    max_agreement: float = Field(0.9, gt=0, le=1, description="a finding at or above this")
    queries: str | None = Field(
        None,
        description="text models: the thief's own texts (.jsonl/.csv/.tsv, labels not "
        "read); default: half of the data, in-domain",
    )
    encoder: str | None = Field(
        None,
        description="text models: the thief's sentence-encoder folder (required), "
        "e.g. all-MiniLM-L6-v2",
    )
    seed: int = Field(
        0, description="seed of the split, queries and copy (the audit check: [audit] seed)"
    )


def extraction_report(
    result: ExtractionResult, *, strategy: str, access: str, max_agreement: float
) -> Report:
    """Metrics, the agreement curve, and a finding when the copy agrees too well."""
    report = Report(title="Model-extraction stress test")
    prefix = f"extraction.{strategy}.{access}"
    report.metrics.update(
        {
            f"{prefix}.queries": result.queries,
            f"{prefix}.agreement": round(result.agreement, 6),
        }
    )
    report.headline.append(f"{prefix}.agreement")
    if result.accuracy is not None:
        report.metrics[f"{prefix}.copy_accuracy"] = round(result.accuracy, 6)
    series = [
        Series(
            label=f"agreement ({strategy}, {access})",
            x=[p.queries for p in result.curve],
            y=[p.agreement for p in result.curve],
        )
    ]
    if result.accuracy is not None:
        series.append(
            Series(
                label="copy accuracy",
                x=[p.queries for p in result.curve],
                y=[p.accuracy or 0.0 for p in result.curve],
            )
        )
    report.figures.append(
        Figure(
            id=f"extraction-{strategy}-{access}",
            title="Stolen copy vs. queries spent",
            kind="line",
            x_label="queries",
            y_label="agreement with the model",
            series=series,
            caption="Agreement: share of held-out inputs on which the copy predicts the "
            "model's label.",
        )
    )
    report.tables.append(
        Table(
            id=f"extraction-curve-{strategy}-{access}",
            title="Extraction curve",
            columns=["queries", "agreement", "copy accuracy"],
            rows=[
                [
                    p.queries,
                    round(p.agreement, 4),
                    None if p.accuracy is None else round(p.accuracy, 4),
                ]
                for p in result.curve
            ],
        )
    )
    if result.stopped:
        report.metrics[f"{prefix}.stopped"] = result.stopped
    if result.agreement >= max_agreement:
        report.add(
            Finding(
                id="MLW-EXT-001",
                title="The model can be copied through its query interface",
                severity=Severity.HIGH,
                detail=(
                    f"a knockoff copy trained on {result.queries} {strategy} queries with "
                    f"{access} access agrees with the model on {result.agreement:.1%} of held-out "
                    f"inputs (limit {max_agreement:.0%}). Harden outputs (labels only, perturbed "
                    "scores), rate-limit, and monitor query patterns."
                ),
                evidence={
                    "queries": result.queries,
                    "agreement": round(result.agreement, 4),
                    "strategy": strategy,
                    "access": access,
                },
                atlas=["AML.T0024.002"],
                owasp=["ML05"],
                check="extraction",
            )
        )
    return report


def run_extraction(
    model: Classifier | Oracle,
    data: Dataset | TextDataset,
    settings: ExtractionSettings,
    report: Report,
    *,
    queries: Sequence[str] | None = None,
    encoder: Any = None,
    progress: ProgressCallback = null_progress,
) -> ExtractionResult:
    """Knockoff extraction of ``model`` into ``report``; the result keeps the stolen copy.

    A text model is attacked with `TextKnockoff`: the thief's ``queries`` (default: the
    pool half of ``data``) and its sentence ``encoder`` (a `TextEncoder`, required).

    The one runner behind ``mlwarden attack extraction`` and the ``extraction`` audit check.
    Half of ``data`` is the thief's in-domain pool, the other half is held out to score
    the copy. Score access needs class scores, label access labels: the contract's error
    before any query otherwise.
    """
    output = "labels" if settings.access == "labels" else "probabilities"
    oracle = as_oracle(model, output, by=f"extraction with {settings.access} access", text=True)
    if oracle.takes_text:
        return _run_text_extraction(
            oracle, data, settings, report, queries=queries, encoder=encoder, progress=progress
        )
    note_assumptions(report, model, "extraction")
    if len(data) < 4:
        raise DataError("model extraction needs at least 4 samples (half pool, half held out)")
    pool, held_out = data.split(0.5, seed=settings.seed)
    with torch.inference_mode():
        eval_labels = oracle.labels(held_out.x).cpu()
    oracle.queries = 0  # scoring the copy is the auditor's work, not the attacker's budget
    attack = KnockoffExtraction(
        settings.budget, settings.strategy, epochs=settings.epochs, seed=settings.seed
    )
    result = attack.extract(
        oracle,
        natural=pool.x,
        eval_x=held_out.x,
        eval_labels=eval_labels,
        eval_y=held_out.y,
        progress=progress,
    )
    report.merge(
        extraction_report(
            result,
            strategy=settings.strategy,
            access=settings.access,
            max_agreement=settings.max_agreement,
        )
    )
    return result


def _run_text_extraction(
    oracle: Oracle,
    data: Dataset | TextDataset,
    settings: ExtractionSettings,
    report: Report,
    *,
    queries: Sequence[str] | None,
    encoder: Any,
    progress: ProgressCallback,
) -> ExtractionResult:
    """`run_extraction` of a text oracle: natural text queries, a head on the thief's encoder."""
    from mlwarden.attacks.extraction import TextKnockoff
    from mlwarden.audit.text import inputs_of, labels_of

    if settings.strategy != "natural":
        raise ParameterError(
            f"text extraction sends natural text only; strategy '{settings.strategy}' "
            "(noise or input gradients) needs tensor inputs"
        )
    if encoder is None:
        raise ParameterError(
            "text extraction needs the thief's sentence encoder: --encoder FOLDER "
            "([checks.extraction] encoder), e.g. an all-MiniLM-L6-v2 folder"
        )
    if len(data) < 4:
        raise DataError("model extraction needs at least 4 samples (half pool, half held out)")
    pool, held_out = data.split(0.5, seed=settings.seed)
    source = "the thief's own texts" if queries is not None else "half of the data (in-domain)"
    thief = list(queries) if queries is not None else inputs_of(pool)
    eval_texts = inputs_of(held_out)
    with torch.inference_mode():
        eval_labels = oracle.labels(eval_texts).cpu()
    oracle.queries = 0  # scoring the copy is the auditor's work, not the attacker's budget
    attack = TextKnockoff(settings.budget, encoder, epochs=settings.epochs, seed=settings.seed)
    result = attack.extract(
        oracle,
        thief,
        eval_texts=eval_texts,  # type: ignore[arg-type]
        eval_labels=eval_labels,
        eval_y=labels_of(held_out),
        progress=progress,
    )
    report.merge(
        extraction_report(
            result,
            strategy=settings.strategy,
            access=settings.access,
            max_agreement=settings.max_agreement,
        )
    )
    counts = torch.bincount(eval_labels, minlength=oracle.num_classes)
    share = float(counts.max()) / len(eval_labels)
    prefix = f"extraction.{settings.strategy}.{settings.access}"
    report.metrics[f"{prefix}.chance_agreement"] = round(share, 6)
    report.tables.append(
        Table(
            id="extraction-text-thief",
            title="The simulated thief (text)",
            columns=["setting", "value"],
            rows=[
                ["query texts", f"{len(thief)} from {source}"],
                ["queries sent", result.queries],
                [
                    "thief's encoder",
                    f"{settings.encoder or encoder.name} "
                    f"({encoder.spec.embedding_dim}-d embeddings)",
                ],
                ["copy", "the thief's encoder + a 2-layer MLP head trained on the answers"],
                ["held-out texts scored", len(eval_texts)],
                ["chance agreement (the victim's commonest label)", round(share, 4)],
            ],
        )
    )
    return result


class ExtractionCheck(CheckConfig, ExtractionSettings):
    """``[checks.extraction]``: knockoff extraction through the model's oracle within a budget."""


@register_check("extraction", ExtractionCheck, title="Model extraction", cost=70)
def extraction_check(ctx: AuditContext, cfg: ExtractionCheck) -> None:
    settings = cfg if "seed" in cfg.model_fields_set else cfg.model_copy(update={"seed": ctx.seed})
    model = ctx.model
    queries, encoder = None, None
    if ctx.takes_text:
        queries, encoder = thief_means(
            settings,
            resolve=ctx.resolve,
            device=ctx.device,
            text_column=ctx.text_column,
            allow=ctx.allow_imports,
        )
    elif settings.queries is not None or settings.encoder is not None:
        raise ConfigError("[checks.extraction] queries and encoder apply to text models only")
    run_extraction(
        model,
        ctx.data,
        settings,
        ctx.report,
        queries=queries,
        encoder=encoder,
        progress=ctx.progress,
    )


def thief_means(
    settings: ExtractionSettings,
    *,
    resolve: Callable[[str], str] = str,
    device: str = "auto",
    text_column: str = "text",
    allow: tuple[str, ...] = (),
) -> tuple[list[str] | None, Any]:
    """The thief's texts (unlabelled) and encoder that ``settings`` name, loaded, for a text
    victim; the encoder folder is scanned before it loads, like every model."""
    from mlwarden.io.models import load_model
    from mlwarden.io.text_data import load_text_data

    queries = None
    if settings.queries is not None:
        queries = list(
            load_text_data(
                resolve(settings.queries), text_column=text_column, label_column=None
            ).texts
        )
    encoder = None
    if settings.encoder is not None:
        encoder = load_model(resolve(settings.encoder), device=device, allow=allow)
    return queries, encoder
