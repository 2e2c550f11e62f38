"""The registry of audit checks and the context each check runs in.

A check is a function ``(ctx, cfg) -> None`` that computes and writes findings,
metrics, figures and tables into ``ctx.report``. Its configuration is a pydantic
model (extra keys forbidden) that lives under ``[checks.<name>]`` in
``mlwarden.toml``. Registration is by decorator, as Opacus registers per-layer
logic, rather than a growing ``if`` chain in the runner.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from mlwarden.core.errors import ConfigError, InputError, ParameterError
from mlwarden.core.findings import Report
from mlwarden.core.progress import ProgressCallback, null_progress

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.contract import Capability
    from mlwarden.core.oracle import Oracle
    from mlwarden.core.spec import InputSpec, SpecInput
    from mlwarden.core.text import TextSpec
    from mlwarden.evaluation.shards import ShardExecutor
    from mlwarden.io.dataset import Dataset
    from mlwarden.io.text_data import TextDataset

TEXT_NOT_YET = "not built for text models yet, see docs/text.md"
"""Why a tensor-only check does not apply to a text model, in every such skip line."""

# One line per module that registers checks.
CHECK_MODULES: list[str] = [
    "mlwarden.audit.builtin_checks",
    "mlwarden.risk.check",
    "mlwarden.supplychain.check",
    "mlwarden.evaluation.checks",
    "mlwarden.evaluation.privacy",
    "mlwarden.evaluation.extraction",
    "mlwarden.defenses.detection.check",
    "mlwarden.evaluation.transfer",
    "mlwarden.evaluation.certify",
    "mlwarden.defenses.federated.check",
]


class CheckConfig(BaseModel):
    """Base of every check's settings; unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


class CheckSkipped(Exception):
    """Raised by a check that does not apply (e.g. white-box check on an ONNX oracle)."""


class NotApplicable(CheckSkipped):
    """Raised by a check that is not built for this kind of input yet (tensor-only checks on
    a text model); the runner states it in an info finding as well as in the skip line."""


C = TypeVar("C", bound=CheckConfig)
CheckFn = Callable[["AuditContext", Any], None]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    config: type[CheckConfig]
    run: CheckFn
    title: str
    cost: int  # rough order of cost; cheaper checks run first


_REGISTRY: dict[str, CheckSpec] = {}
_loaded = False


def register_check(
    name: str, config: type[C], *, title: str = "", cost: int = 50
) -> Callable[[Callable[[AuditContext, C], None]], Callable[[AuditContext, C], None]]:
    """Decorator that registers ``fn`` as the check ``name`` configured by ``config``."""

    def deco(fn: Callable[[AuditContext, C], None]) -> Callable[[AuditContext, C], None]:
        if name in _REGISTRY and _REGISTRY[name].run is not fn:
            raise RuntimeError(f"check '{name}' registered twice")
        _REGISTRY[name] = CheckSpec(name, config, fn, title or name, cost)
        return fn

    return deco


def available_checks() -> dict[str, CheckSpec]:
    """All registered checks by name (imports the check modules once)."""
    global _loaded
    if not _loaded:
        for module in CHECK_MODULES:
            importlib.import_module(module)
        _loaded = True
    return dict(_REGISTRY)


def check_spec(name: str) -> CheckSpec:
    checks = available_checks()
    if name not in checks:
        raise ConfigError(f"unknown check 'checks.{name}'; available: {', '.join(sorted(checks))}")
    return checks[name]


@dataclass
class AuditContext:
    """What a check may use: the model (lazily loaded), the data, the report, settings.

    Loading is lazy so that checks that need no model (``scan``, ``risk``) never pay
    for it, and the model is loaded once however many checks use it.
    """

    model_source: str | None = None
    model_factory: str | None = None
    data_source: str | None = None
    spec_override: SpecInput | None = None
    data_limit: int | None = None
    label_column: str = "label"
    text_column: str = "text"
    device: str = "auto"
    seed: int = 0
    batch_size: int = 256
    output_dir: Path = field(default_factory=lambda: Path("mlwarden-report"))
    base_dir: Path = field(default_factory=Path.cwd)
    report: Report = field(default_factory=Report)
    progress: ProgressCallback = null_progress
    allow_imports: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    check: str = ""
    """The name of the check running now (set by the runner); skip reasons name it."""
    executor: ShardExecutor | None = None
    """Where sample-parallel checks send their shards (``--ray``); None: in this process."""
    shard_size: int | None = None
    """Samples per shard when ``executor`` is set (None: the evaluation's default)."""
    _classifier: Classifier | None = None
    _oracle: Oracle | None = None
    _data: Dataset | TextDataset | None = None

    def resolve(self, path: str) -> str:
        """A path from a check's settings, relative to the configuration file's folder; a
        built-in data set's name (``rotten_tomatoes_plots``) passes unchanged."""
        from mlwarden.io.dataset import BUILTIN
        from mlwarden.io.text_builtin import BUILTIN_TEXT

        p = Path(path)
        if path in (*BUILTIN, *BUILTIN_TEXT) and not (self.base_dir / p).exists():
            return path
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())

    # -- model --------------------------------------------------------------
    def _load(self) -> None:
        if self._classifier is not None or self._oracle is not None:
            return
        if not self.model_source:
            raise ConfigError("this check needs a model: set [model] path or --model")
        from mlwarden.core.contract import ModelKind, kind_of, note_assumptions
        from mlwarden.io.models import load_model

        loaded = load_model(
            self.model_source,
            factory=self.model_factory,
            spec=self.spec_override,
            device=self.device,
            allow=self.allow_imports,
        )
        # The report says what the loader assumed (bounds of a plain export) once, whichever
        # check loaded the model first.
        note_assumptions(self.report, loaded)
        if kind_of(loaded) in (ModelKind.CLASSIFIER, ModelKind.TEXT_CLASSIFIER):
            self._classifier = loaded  # type: ignore[assignment]
        else:
            self._oracle = loaded  # type: ignore[assignment]

    @property
    def model(self) -> Classifier | Oracle:
        """The model as loaded, whatever its kind (`mlwarden.core.contract.ModelKind`)."""
        self._load()
        model = self._classifier if self._classifier is not None else self._oracle
        assert model is not None
        return model

    def require(self, *needs: Capability, hint: str = "") -> None:
        """Skip the running check unless the model offers ``needs``; the contract gives the reason.

        A check that needs gradients on an ONNX oracle does not apply; it is not an error.
        """
        from mlwarden.core.contract import Capability, missing, require

        try:
            require(self.model, needs, by=self._by, hint=hint)
        except ParameterError as exc:
            if Capability.TENSOR_INPUTS in missing(self.model, needs):
                raise NotApplicable(f"{exc} ({TEXT_NOT_YET})") from None
            raise CheckSkipped(str(exc)) from None

    @property
    def _by(self) -> str:
        return f"the {self.check} check" if self.check else "this check"

    @property
    def takes_text(self) -> bool:
        """Whether the model under audit takes strings (a text classifier or encoder)."""
        from mlwarden.core.contract import takes_text

        return takes_text(self.model)

    def tensor_only(self, error: ParameterError) -> CheckSkipped:
        """The skip of a check that refused the model: `NotApplicable` for a text model
        (the check is not built for text yet), else a plain `CheckSkipped`."""
        if self.takes_text:
            return NotApplicable(f"{error} ({TEXT_NOT_YET})")
        return CheckSkipped(str(error))

    @property
    def classifier(self) -> Classifier:
        """The white-box model; raises `CheckSkipped` for a black-box-only model."""
        from mlwarden.core.contract import Capability

        self.require(Capability.GRADIENTS)
        assert self._classifier is not None
        return self._classifier

    @property
    def oracle(self) -> Oracle:
        """The model as a query oracle (probabilities out); `CheckSkipped` for label-only ones."""
        from mlwarden.core.contract import Capability, as_oracle, input_kind

        self.require(Capability.SCORES, input_kind(self.model))
        if self._oracle is None:
            self._oracle = as_oracle(self.model, by=self._by, batch_size=self.batch_size, text=True)
        return self._oracle

    @property
    def spec(self) -> InputSpec | TextSpec:
        return self.model.spec

    # -- data ---------------------------------------------------------------
    @property
    def data(self) -> Dataset | TextDataset:
        """Evaluation data, validated against the model's spec, limited to ``data_limit``.

        A text model reads labelled text (`mlwarden.io.load_text_data`, columns
        ``text_column`` and ``label_column``, labels among the model's class names).
        """
        if self._data is None:
            if not self.data_source:
                raise ConfigError("this check needs data: set [data] source or --data")
            data = self.load_data(self.data_source)
            if self.data_limit is not None:
                data = data.take(self.data_limit)
            if len(data) == 0:
                raise InputError(f"data set '{self.data_source}' is empty")
            self._data = data
        return self._data

    def load_data(self, source: str) -> Dataset | TextDataset:
        """Labelled data from ``source`` for the model under audit (tensors or text)."""
        if self.takes_text:
            from mlwarden.audit.text import labelled_text

            return labelled_text(
                source, self.model, text_column=self.text_column, label_column=self.label_column
            )
        from mlwarden.io.data import load_data

        return load_data(source, spec=self.spec, label_column=self.label_column)

    @cached_property
    def artefact_dir(self) -> Path:
        path = self.output_dir / "artefacts"
        path.mkdir(parents=True, exist_ok=True)
        return path
