"""The ``backdoor`` audit check: model-level backdoor detection on the audit data.

Configured by `BackdoorSettings` under ``[checks.backdoor]`` (``methods``, ``threshold``,
``steps``, ``samples``, ``seed``, ``text_column``), the same settings ``mlwarden backdoor
detect`` takes as flags. An image classifier gets trigger reverse-engineering
(`run_backdoor_scan`); a Hugging Face text encoder folder gets the trigger-token search
(`run_encoder_scan`) and a text classifier folder the per-class trigger search
(`run_classifier_scan`, with text STRIP if ``strip``), on the audit data read as clean
text. The audit data must be clean (it is what the triggers are searched on). A model that
cannot serve the detectors (an ONNX score oracle has no gradients) skips the check with the
contract's reason.
"""

from __future__ import annotations

from mlwarden.audit.registry import AuditContext, CheckSkipped, NotApplicable, register_check
from mlwarden.core.errors import ConfigError, ParameterError
from mlwarden.defenses.detection.model_scan import (
    DETECTORS,
    BackdoorSettings,
    require_detectors,
    run_backdoor_scan,
)


@register_check(
    "backdoor", BackdoorSettings, title="Backdoor detection (trigger reverse-engineering)", cost=70
)
def backdoor_check(ctx: AuditContext, cfg: BackdoorSettings) -> None:
    from mlwarden.io.hf import is_hf_folder

    if ctx.model_source and is_hf_folder(ctx.model_source):
        _text_encoder_check(ctx, cfg)
        return
    if cfg.strip:
        raise ConfigError(
            "[checks.backdoor] strip is text STRIP, for a text classifier folder; this model "
            "is not one"
        )
    model = ctx.model
    try:
        require_detectors(model, (DETECTORS[m] for m in cfg.methods))
    except ParameterError as exc:
        raise CheckSkipped(str(exc)) from None
    run_backdoor_scan(
        model,
        ctx.data,
        cfg,
        report=ctx.report,
        seed=ctx.seed,
        subject=str(ctx.model_source),
        progress=ctx.progress,
    )


def _text_encoder_check(ctx: AuditContext, cfg: BackdoorSettings) -> None:
    """The trigger-token search of a text encoder folder, or the per-class trigger search of
    a text classifier folder; another kind of model does not apply (stated, never passed)."""
    from mlwarden.core.text import TextClassifier
    from mlwarden.defenses.detection.encoder_scan import load_text_subject, run_encoder_scan
    from mlwarden.defenses.detection.text_classifier_scan import run_classifier_scan

    if not ctx.data_source:
        raise ConfigError("the backdoor check needs clean text: set [data] source or --data")
    assert ctx.model_source is not None
    loaded, texts = load_text_subject(
        ctx.model_source,
        ctx.data_source,
        cfg,
        allow=ctx.allow_imports,
        device=ctx.device,
        wrong_kind=NotApplicable,
    )
    runner = run_classifier_scan if isinstance(loaded, TextClassifier) else run_encoder_scan
    runner(
        loaded,
        texts,
        cfg,
        report=ctx.report,
        seed=ctx.seed,
        subject=str(ctx.model_source),
        progress=ctx.progress,
    )
