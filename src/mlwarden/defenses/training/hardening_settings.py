"""The settings of hardening (`mlwarden.defenses.training.adversarial`), without torch.

Kept apart so that ``mlwarden harden --help`` shows the defaults without importing torch
(the CLI's light-import rule). `AdversarialTrainingSettings` is the training; the
`HardenSettings` of the front door add how the before/after measurement is made.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlwarden.core.errors import ParameterError

NORMS = ("linf", "l2")

METHODS: tuple[str, ...] = ("pgd", "trades", "fast", "gaussian")
"""The hardening methods, in the order the docs and the CLI list them."""


class AdversarialTrainingSettings(BaseModel):
    """Every default and range of adversarial training, in one place.

    The defaults are the ones measured in docs/hardening.md: on digits, ``pgd`` with them
    reaches robust accuracy above 0.6 under the ``standard`` preset at L-inf 0.1.
    """

    model_config = ConfigDict(extra="forbid")

    method: str = Field("pgd", description="pgd, trades, fast or gaussian")
    eps: float = Field(0.1, gt=0, description="radius of the training perturbations")
    norm: str = Field("linf", description="linf or l2")
    epochs: int = Field(30, ge=1, description="training epochs")
    lr: float = Field(2e-3, gt=0, description="learning rate (Adam)")
    batch_size: int = Field(64, ge=1, description="training batch size")
    steps: int = Field(10, ge=1, description="inner PGD steps of pgd and trades")
    alpha: float | None = Field(
        None, gt=0, description="inner step size (default 2.5*eps/steps; fast: 1.25*eps)"
    )
    beta: float = Field(6.0, ge=0, description="weight of the TRADES KL term")
    sigma: float = Field(0.25, gt=0, description="noise standard deviation of gaussian")
    warmup_epochs: int = Field(5, ge=0, description="epochs over which eps ramps up linearly")
    monitor_samples: int = Field(
        128, ge=0, description="training samples fast training holds apart for its monitor"
    )
    overfit_drop: float = Field(
        0.2, gt=0, le=1, description="PGD accuracy fall (from its best) that flags overfitting"
    )
    overfit_gap: float = Field(
        0.3,
        gt=0,
        le=1,
        description="FGSM accuracy above PGD accuracy that flags overfitting (the model "
        "learnt to mask the one-step gradient; measured gaps of healthy runs stay under 0.21)",
    )
    on_overfit: Literal["fallback", "stop"] = Field(
        "fallback", description="after catastrophic overfitting: fall back to pgd, or stop"
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        value = str(value).strip().lower()
        if value not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}, got '{value}'")
        return value

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, value: str) -> str:
        value = str(value).strip().lower()
        if value not in NORMS:
            raise ValueError(f"must be one of {', '.join(NORMS)}, got '{value}'")
        return value

    @field_validator("eps", "sigma", "lr", "beta", "overfit_drop", "overfit_gap")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    def step_size(self) -> float:
        """The inner step: given, else Madry's ``2.5 * eps / steps`` or Wong's ``1.25 * eps``."""
        if self.alpha is not None:
            return self.alpha
        return 1.25 * self.eps if self.method == "fast" else 2.5 * self.eps / self.steps

    def eps_at(self, epoch: int) -> float:
        """The radius of epoch ``epoch`` (0-based): the linear ramp, then ``eps``."""
        if self.warmup_epochs <= 0:
            return self.eps
        return self.eps * min(1.0, (epoch + 1) / self.warmup_epochs)


def checked_settings(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """``model(**values)`` with a validation error turned into one `ParameterError` line
    that names the setting (Python callers get the message the CLI prints)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ParameterError(f"{name}: {message}") from None


class HardenSettings(AdversarialTrainingSettings):
    """`AdversarialTrainingSettings` plus how the before/after measurement is made."""

    preset: str = Field("standard", description="evasion preset of the robust accuracy")
    eval_eps: float | None = Field(
        None, gt=0, description="radius of the robust accuracy (default: eps)"
    )
    samples: int = Field(500, ge=1, description="measure on at most this many held-out samples")
    test_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of the data held out for the measurement"
    )
    seed: int | None = Field(None, description="default: the command's --seed")
    certify: bool | None = Field(
        None,
        description="also certify before and after by randomized smoothing at sigma "
        "(default: for gaussian only, the method made for it)",
    )
    certify_samples: int = Field(100, ge=1, description="held-out samples certified")
    certify_n: int = Field(
        10_000, ge=100, description="noise samples per certified sample (n; n0 is 100)"
    )
    certify_radius: float = Field(0.25, gt=0, description="L2 radius of the certified column")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from mlwarden.attacks.evasion.registry import PRESETS

        if value not in PRESETS:
            raise ValueError(f"must be one of {', '.join(PRESETS)}, got '{value}'")
        return value

    def measured_eps(self) -> float:
        return self.eval_eps if self.eval_eps is not None else self.eps

    def certifies(self) -> bool:
        """Whether the before/after table has the certified columns."""
        return self.certify if self.certify is not None else self.method == "gaussian"

    def training(self) -> AdversarialTrainingSettings:
        """The training part of these settings."""
        fields = set(AdversarialTrainingSettings.model_fields)
        return AdversarialTrainingSettings.model_validate(
            {k: v for k, v in self.model_dump().items() if k in fields}
        )


__all__ = ["METHODS", "AdversarialTrainingSettings", "HardenSettings", "checked_settings"]
