"""`Oracle`: a model seen only through queries.

Black-box attacks, extraction and membership inference talk to an oracle, so the
same code stress-tests a local model, an ONNX session or a deployed gateway over
HTTP. Every oracle counts queries (samples asked) and can enforce a budget.

An oracle whose spec is a `TextSpec` takes lists of strings instead of tensors (a text
score oracle or a text label-only one, `mlwarden.core.contract`): one query is one text,
counted and budgeted the same way; `TextClassifierOracle` wraps a local `TextClassifier`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from mlwarden.core.classifier import Classifier
from mlwarden.core.contract import ModelKind
from mlwarden.core.errors import OracleError, ParameterError
from mlwarden.core.spec import InputSpec
from mlwarden.core.text import TextSpec, check_texts

if TYPE_CHECKING:
    from mlwarden.core.text import TextClassifier

Queries = torch.Tensor | Sequence[str]
"""A batch of queries: a tensor ``(N, *shape)``, or N strings for a text oracle."""

OracleOutput = Literal["probabilities", "labels"]


class BudgetExhausted(OracleError):
    """The oracle's query budget is spent."""


class Oracle(ABC):
    """A callable from a batch to probabilities ``(N, C)`` or labels ``(N,)``.

    ``deterministic`` says whether asking the same input twice gives the same answer.
    Query attacks use it to never spend a query on a point already asked; an oracle
    that may add noise (a remote gateway, a randomised defence) leaves it ``False``.
    """

    deterministic: bool = False
    name: str = "oracle"
    spec_assumptions: tuple[str, ...] = ()

    def __init__(
        self,
        spec: InputSpec | TextSpec,
        output: OracleOutput = "probabilities",
        budget: int | None = None,
    ) -> None:
        if output not in ("probabilities", "labels"):
            raise ParameterError(f"output must be 'probabilities' or 'labels', got {output!r}")
        if budget is not None and budget <= 0:
            raise ParameterError(f"budget must be positive, got {budget}")
        self.spec = spec
        self.output: OracleOutput = output
        self.budget = budget
        self.queries = 0

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def takes_text(self) -> bool:
        return isinstance(self.spec, TextSpec)

    @property
    def model_kind(self) -> ModelKind:
        """A score oracle or a label-only one, by what it answers and takes in
        (`mlwarden.core.contract`)."""
        scores = self.output == "probabilities"
        if self.takes_text:
            return ModelKind.TEXT_SCORE_ORACLE if scores else ModelKind.TEXT_LABEL_ORACLE
        return ModelKind.SCORE_ORACLE if scores else ModelKind.LABEL_ORACLE

    def _batch(self, x: Queries) -> Queries:
        """One query as a batch of one; strings checked for a text oracle."""
        if self.takes_text:
            return check_texts(x, what="oracle queries")
        if not isinstance(x, torch.Tensor):
            raise OracleError(
                f"this oracle takes tensors of shape {tuple(self.spec.shape)}, "  # type: ignore[union-attr]
                f"got {type(x).__name__}"
            )
        if x.dim() == len(self.spec.shape):  # type: ignore[union-attr]
            x = x.unsqueeze(0)
        return x

    def _spend(self, n: int) -> None:
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExhausted(
                f"query budget of {self.budget} exhausted ({self.queries} used, {n} asked)"
            )

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def __call__(self, x: Queries) -> torch.Tensor:
        x = self._batch(x)
        self._spend(len(x))
        out = self._query(x)
        self.queries += len(x)
        return self._check(out, len(x))

    def _check(self, out: torch.Tensor, n: int) -> torch.Tensor:
        if self.output == "labels":
            if out.shape != (n,):
                raise OracleError(f"oracle returned shape {tuple(out.shape)}, expected ({n},)")
            return out.long()
        if out.shape != (n, self.num_classes):
            raise OracleError(
                f"oracle returned shape {tuple(out.shape)}, expected ({n}, {self.num_classes})"
            )
        if not bool(torch.isfinite(out).all()):
            raise OracleError("oracle returned NaN or infinite scores")
        return out.float()

    def log_probabilities(self, x: Queries) -> torch.Tensor:
        """Log class probabilities in float64, counted against the budget like a query.

        Membership scores need them: in float32 the most confident records all read
        p = 1.0 and tie. A local model answers ``log_softmax`` of its logits; any other
        oracle only has its probabilities, whose logarithm is taken in float64.
        """
        if self.output != "probabilities":
            raise OracleError("log-probabilities need scores; this oracle returns labels only")
        x = self._batch(x)
        self._spend(len(x))
        out = self._query_log(x)
        self.queries += len(x)
        if out.shape != (len(x), self.num_classes):
            raise OracleError(
                f"oracle returned shape {tuple(out.shape)}, expected ({len(x)}, {self.num_classes})"
            )
        if bool(torch.isnan(out).any()) or bool(torch.isposinf(out).any()):
            raise OracleError("oracle returned NaN or infinite scores")
        return out.double()

    def _query_log(self, x: Queries) -> torch.Tensor:
        probs = self._check(self._query(x), len(x)).double()
        return torch.log(probs.clamp_min(torch.finfo(torch.float64).tiny))

    def labels(self, x: Queries) -> torch.Tensor:
        """Top-1 labels whatever the output kind."""
        out = self(x)
        return out if self.output == "labels" else out.argmax(dim=1)

    @abstractmethod
    def _query(self, x: Queries) -> torch.Tensor:
        """Answer one batch; subclasses do the real work."""


class ClassifierOracle(Oracle):
    """A local `Classifier` behind the oracle interface.

    A classifier in eval mode answers the same input the same way; pass
    ``deterministic=False`` for a model that randomises its forward pass on purpose.
    """

    def __init__(
        self,
        classifier: Classifier,
        output: OracleOutput = "probabilities",
        budget: int | None = None,
        batch_size: int = 512,
        *,
        deterministic: bool = True,
    ) -> None:
        super().__init__(classifier.spec, output, budget)
        self.classifier = classifier
        self.name = classifier.name
        self.spec_assumptions = classifier.spec_assumptions
        self.batch_size = batch_size
        self.deterministic = deterministic

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.classifier.probabilities(x, self.batch_size)
        return probs.argmax(1) if self.output == "labels" else probs

    def _query_log(self, x: torch.Tensor) -> torch.Tensor:
        if type(self)._query is not ClassifierOracle._query:
            # A subclass that changes the answers (rounding, noise) must be heard as it answers.
            return super()._query_log(x)
        logits = self.classifier.logits(x, self.batch_size)
        return torch.log_softmax(logits.double(), dim=1).cpu()


class LabelOnlyOracle(Oracle):
    """Another oracle seen through its top-1 label only (simulates label-only access)."""

    def __init__(self, inner: Oracle, budget: int | None = None) -> None:
        super().__init__(inner.spec, "labels", budget)
        self.inner = inner
        self.name = inner.name
        self.spec_assumptions = inner.spec_assumptions
        self.deterministic = inner.deterministic

    @property
    def remaining(self) -> int | None:
        """The tighter of this view's budget and the inner oracle's: asking spends both."""
        own = None if self.budget is None else self.budget - self.queries
        inner = self.inner.remaining
        return inner if own is None else own if inner is None else min(own, inner)

    def _query(self, x: Queries) -> torch.Tensor:
        return self.inner.labels(x)


class TextClassifierOracle(Oracle):
    """A local `TextClassifier` behind the oracle interface: strings in, one query per text.

    Answers come back on the CPU (a remote text oracle answers there too), in the order
    asked; ``batch_size`` texts go through the model per forward pass.
    """

    def __init__(
        self,
        classifier: TextClassifier,
        output: OracleOutput = "probabilities",
        budget: int | None = None,
        batch_size: int = 32,
    ) -> None:
        super().__init__(classifier.spec, output, budget)
        self.classifier = classifier
        self.name = classifier.name
        self.batch_size = batch_size
        self.deterministic = True

    def _query(self, x: Queries) -> torch.Tensor:
        probs = self.classifier.probabilities(x, self.batch_size).cpu()  # type: ignore[arg-type]
        return probs.argmax(1) if self.output == "labels" else probs

    def _query_log(self, x: Queries) -> torch.Tensor:
        logits = self.classifier.logits(x, self.batch_size)  # type: ignore[arg-type]
        return torch.log_softmax(logits.double(), dim=1).cpu()
