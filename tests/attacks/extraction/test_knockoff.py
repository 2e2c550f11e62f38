"""Knockoff extraction copies an undefended model within its budget, and stops cleanly."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.extraction import KnockoffExtraction
from mlwarden.core import ClassifierOracle, LabelOnlyOracle, OracleError, ParameterError
from mlwarden.core.errors import DataError
from mlwarden.core.oracle import Oracle


@pytest.fixture(scope="module")
def pools(digits_split):
    _, test = digits_split
    return test.split(0.5, seed=0)  # attacker's pool, held-out set


def run(oracle, pools, reference, budget=300, strategy="natural", seed=0):
    pool, held = pools
    attack = KnockoffExtraction(budget, strategy, epochs=25, checkpoints=3, seed=seed)
    return attack.extract(oracle, natural=pool.x, eval_x=held.x,
                          eval_labels=reference.predict(held.x), eval_y=held.y)


def test_natural_queries_copy_an_undefended_model(digits_cnn, pools):
    oracle = ClassifierOracle(digits_cnn)
    result = run(oracle, pools, digits_cnn)
    assert result.queries == oracle.queries == 300
    assert result.agreement > 0.85
    assert [p.queries for p in result.curve] == [100, 200, 300]
    assert result.curve[-1].agreement >= result.curve[0].agreement - 0.05


def test_label_only_and_random_queries_cost_more(digits_cnn, pools):
    scores = run(ClassifierOracle(digits_cnn), pools, digits_cnn, strategy="random")
    labels_only = LabelOnlyOracle(ClassifierOracle(digits_cnn))
    labels = run(labels_only, pools, digits_cnn, strategy="random")
    natural = run(ClassifierOracle(digits_cnn), pools, digits_cnn)
    assert scores.agreement < natural.agreement
    assert labels.agreement <= scores.agreement + 0.05


def test_same_seed_same_copy(digits_cnn, pools):
    a = run(ClassifierOracle(digits_cnn), pools, digits_cnn, budget=64, strategy="synthetic")
    b = run(ClassifierOracle(digits_cnn), pools, digits_cnn, budget=64, strategy="synthetic")
    assert [p.agreement for p in a.curve] == [p.agreement for p in b.curve]


class Blocking(Oracle):
    """Answers the first ``allowed`` queries, then refuses like a gateway that blocked the key."""

    def __init__(self, inner: ClassifierOracle, allowed: int) -> None:
        super().__init__(inner.spec, "probabilities")
        self.inner, self.allowed = inner, allowed

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        if self.queries + len(x) > self.allowed:
            raise OracleError("403: key blocked by the extraction monitor")
        return self.inner(x)


def test_an_oracle_that_refuses_ends_the_attack_early(digits_cnn, pools):
    oracle = Blocking(ClassifierOracle(digits_cnn), 128)
    result = run(oracle, pools, digits_cnn)
    # Batches of 64 stop at the first checkpoint (100); the next batch would pass 128.
    assert result.queries == oracle.queries == 100
    assert result.agreement > 0.5  # the copy is trained on what was gathered
    assert result.stopped and "blocked" in result.stopped


def test_invalid_budgets_and_data(digits_cnn, pools):
    with pytest.raises(ParameterError, match="budget"):
        KnockoffExtraction(0)
    with pytest.raises(ParameterError, match="strategy"):
        KnockoffExtraction(10, "psychic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="natural"):
        KnockoffExtraction(10).extract(ClassifierOracle(digits_cnn))


# -- the runner behind `attack extraction` and the `extraction` check ---------------------------
def test_runner_checks_access_against_the_contract(digits_cnn, digits_split):
    from mlwarden.core import Classifier
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.extraction import ExtractionSettings, run_extraction

    _, test = digits_split
    labels_only = LabelOnlyOracle(ClassifierOracle(digits_cnn))
    with pytest.raises(ParameterError, match="extraction with scores access needs class scores; "
                                             ".* is a label-only oracle"):
        run_extraction(labels_only, test, ExtractionSettings(), Report())
    assert labels_only.queries == 0
    with pytest.raises(DataError, match="at least 4"):
        run_extraction(digits_cnn, test.take(3), ExtractionSettings(), Report())
    # Label access works through a label-only oracle; assumed bounds are stated in the report.
    assumed = Classifier(digits_cnn.module, digits_cnn.spec, name="assumed",
                         spec_assumptions=("value bounds [0, 1] assumed",))
    report = Report()
    settings = ExtractionSettings(budget=32, epochs=2, access="labels")
    result = run_extraction(assumed, test, settings, report)
    assert result.queries == report.metrics["extraction.natural.labels.queries"] == 32
    assert [f.id for f in report.findings][0] == "MLW-SPEC-001"
