"""Square Attack against real oracles: the trained digits CNN, tiny random models, ONNX."""

from __future__ import annotations

import pytest
import torch
from evasion_helpers import tiny_classifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.attacks.evasion._projection import lp_norm
from mlwarden.attacks.evasion.square import SquareAttack, margin_loss, p_schedule
from mlwarden.core import Classifier, OracleError, ParameterError
from mlwarden.core.oracle import ClassifierOracle, Oracle


@pytest.fixture(scope="module")
def square_batch(digits_split) -> tuple[torch.Tensor, torch.Tensor]:
    """40 held-out digits: enough for stable success rates, cheap to query."""
    _, test = digits_split
    return test.x[:40], test.y[:40]


@pytest.fixture(scope="module")
def linf_runs(digits_cnn: Classifier, square_batch) -> dict[float, object]:
    """Square Linf at three radii with a 200-query budget, run once for several tests."""
    x, y = square_batch
    return {
        eps: SquareAttack(eps, norm="linf", queries=200, seed=0)(ClassifierOracle(digits_cnn), x, y)
        for eps in (0.05, 0.1, 0.2)
    }


def _rate(result) -> float:
    """Success rate over the samples the model got right (the attack's real work)."""
    return float(result.success[result.clean_correct].float().mean())


def test_linf_success_rates_on_digits(linf_runs, digits_cnn: Classifier, square_batch) -> None:
    x, y = square_batch
    rates = {eps: _rate(r) for eps, r in linf_runs.items()}
    # MNIST-like data: the paper fools >90% at eps 0.3 on 28x28 MNIST; on 8x8 digits the
    # same happens at eps 0.2 within a few dozen queries, and white-box PGD-50 reaches
    # about 12% / 44% / 96% at eps 0.05 / 0.1 / 0.2 on this model.
    assert rates[0.2] >= 0.9
    assert rates[0.1] >= 0.3
    assert rates[0.05] < rates[0.1] < rates[0.2]
    assert linf_runs[0.2].mean_queries_successful < 100
    for eps, res in linf_runs.items():
        assert float(lp_norm(res.x_adv - x, "linf").max()) <= eps + 1e-6
        assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
        assert res.gradient_evaluations == 0
        # success is what the model says about x_adv, not bookkeeping
        assert torch.equal(res.success, digits_cnn.predict(res.x_adv) != y)
        assert torch.allclose(res.perturbation_norm, lp_norm(res.x_adv - x, "linf"))


def test_l2_success_rate_on_digits(digits_cnn: Classifier, square_batch) -> None:
    x, y = square_batch
    res = SquareAttack(1.0, norm="l2", queries=200, seed=0)(digits_cnn, x, y)
    # PGD-50 (white-box) fools ~96% at L2 eps 1.0 on this model
    assert _rate(res) >= 0.8
    assert float(lp_norm(res.x_adv - x, "l2").max()) <= 1.0 + 1e-5
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert torch.equal(res.success, digits_cnn.predict(res.x_adv) != y)


def test_query_budget_is_respected_exactly(linf_runs, digits_cnn: Classifier, square_batch) -> None:
    res = linf_runs[0.05]
    standing = res.clean_correct & ~res.success
    assert bool(standing.any())
    # never more than the budget (clean query included); on a deterministic oracle a sample
    # that has tried every proposal of a window size rests until the size changes, so a
    # resisting sample may stop a few queries short of it, most spend it all
    assert int(res.queries_per_sample.max()) <= 200
    assert float((res.queries_per_sample[standing] == 200).float().mean()) >= 0.8
    # without repeat avoidance every resisting sample spends exactly the whole budget
    x, y = square_batch
    plain = SquareAttack(0.05, queries=200, seed=0, avoid_repeats=False)(digits_cnn, x, y)
    resisted = plain.clean_correct & ~plain.success
    assert bool(resisted.any()) and torch.all(plain.queries_per_sample[resisted] == 200)
    # clean misclassifications cost exactly their clean query
    assert torch.all(res.queries_per_sample[~res.clean_correct] == 1)
    assert res.queries == int(res.queries_per_sample.sum())
    # and the oracle saw exactly what the result reports
    oracle = ClassifierOracle(digits_cnn)
    again = SquareAttack(0.05, queries=16, restarts=3, seed=0)(oracle, x, y)
    assert oracle.queries == again.queries
    assert int(again.queries_per_sample.max()) == 16


def test_same_seed_same_result(digits_cnn: Classifier, square_batch) -> None:
    x, y = square_batch[0][:8], square_batch[1][:8]
    for norm, eps in (("linf", 0.1), ("l2", 0.7)):
        a = SquareAttack(eps, norm=norm, queries=20, seed=5)(digits_cnn, x, y)
        b = SquareAttack(eps, norm=norm, queries=20, seed=5)(digits_cnn, x, y)
        c = SquareAttack(eps, norm=norm, queries=20, seed=6)(digits_cnn, x, y)
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
        assert torch.equal(a.queries_per_sample, b.queries_per_sample)
        assert not torch.equal(a.x_adv, c.x_adv)


def test_inputs_are_not_modified(digits_cnn: Classifier, square_batch) -> None:
    x, y = square_batch[0][:8], square_batch[1][:8]
    x_before, y_before = x.clone(), y.clone()
    SquareAttack(0.2, norm="l2", queries=10)(digits_cnn, x, y)
    SquareAttack(0.2, queries=10)(digits_cnn, x, y)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


def test_labels_only_oracle_is_refused(digits_cnn: Classifier, square_batch) -> None:
    x, y = square_batch
    oracle = ClassifierOracle(digits_cnn, output="labels")
    with pytest.raises(ParameterError, match="needs class scores; .* is a label-only oracle"):
        SquareAttack(0.1)(oracle, x, y)
    assert oracle.queries == 0


class _BrokenOracle(Oracle):
    """Answers NaN scores, or scores of the wrong shape."""

    def __init__(self, classifier: Classifier, mode: str) -> None:
        super().__init__(classifier.spec)
        self.classifier, self.mode = classifier, mode

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.classifier.probabilities(x)
        if self.mode == "nan":
            probs[0, 0] = float("nan")
            return probs
        return probs[:, :3]


@pytest.mark.parametrize("mode", ["nan", "shape"])
def test_malformed_oracle_output_raises_oracle_error(
    digits_cnn: Classifier, square_batch, mode: str
) -> None:
    x, y = square_batch
    with pytest.raises(OracleError):
        SquareAttack(0.1, queries=10)(_BrokenOracle(digits_cnn, mode), x, y)


def test_oracle_budget_stops_the_attack_cleanly(digits_cnn: Classifier, square_batch) -> None:
    x, y = square_batch
    oracle = ClassifierOracle(digits_cnn, budget=300)
    res = SquareAttack(0.05, queries=200)(oracle, x, y)
    assert oracle.queries == res.queries <= 300
    assert float(lp_norm(res.x_adv - x, "linf").max()) <= 0.05 + 1e-6


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"eps": 0.1, "queries": 0}, "queries"),
        ({"eps": 0.1, "queries": 2.5}, "queries"),
        ({"eps": 0.1, "norm": "l1"}, "norm"),
        ({"eps": 0.1, "p_init": 0.0}, "p_init"),
        ({"eps": 0.1, "p_init": 1.5}, "p_init"),
        ({"eps": 0.1, "restarts": 0}, "restarts"),
        ({"eps": 0.1, "seed": "a"}, "seed"),
        ({"eps": 0.1, "avoid_repeats": "yes"}, "avoid_repeats"),
    ],
)
def test_invalid_hyper_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ParameterError, match=name):
        SquareAttack(**kwargs)


def test_p_schedule_halves_at_the_papers_milestones() -> None:
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 51, 10000) == 0.2
    assert p_schedule(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    # rescaled to shorter runs: 1% of a 1000-query run is the 10,000-query milestone 100
    assert p_schedule(0.8, 10, 1000) == 0.2


def test_margin_loss_is_negative_exactly_when_misclassified() -> None:
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(scores, y), torch.tensor([0.5, -0.3]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(7,), (5, 6), (2, 4, 4), (1, 9, 7), (3, 2, 2)]),
    bounds=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (-0.5, 3.0)]),
    eps=st.floats(0.01, 2.0),
    norm=st.sampled_from(["linf", "l2"]),
    seed=st.integers(0, 3),
)
def test_perturbations_stay_in_the_ball_and_the_box(shape, bounds, eps, norm, seed) -> None:
    clf = tiny_classifier(shape, 3, bounds, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    low, high = bounds
    x = low + (high - low) * torch.rand(6, *shape, generator=gen)
    y = torch.randint(0, 3, (6,), generator=gen)
    x_before = x.clone()
    res = SquareAttack(eps, norm=norm, queries=15, seed=seed)(clf, x, y)
    assert torch.equal(x, x_before)
    assert res.x_adv.shape == x.shape
    assert float(lp_norm(res.x_adv - x, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(res.x_adv.min()) >= low and float(res.x_adv.max()) <= high
    assert int(res.queries_per_sample.max()) <= 15
    assert torch.equal(res.success, clf.predict(res.x_adv) != y)


def test_works_unchanged_against_an_onnx_oracle(
    digits_cnn: Classifier, square_batch, tmp_path
) -> None:
    pytest.importorskip("onnxruntime")
    from mlwarden.io.export import export_onnx
    from mlwarden.io.onnx_oracle import OnnxOracle

    path = export_onnx(digits_cnn, tmp_path / "digits.onnx")
    oracle = OnnxOracle(path)
    x, y = square_batch[0][:24], square_batch[1][:24]
    res = SquareAttack(0.2, queries=200, seed=0)(oracle, x, y)
    assert oracle.queries == res.queries
    assert _rate(res) >= 0.8
    # the ONNX graph is the same function: the local model agrees the points are adversarial
    assert bool((digits_cnn.predict(res.x_adv[res.success]) != y[res.success]).all())
    assert float(lp_norm(res.x_adv - x, "linf").max()) <= 0.2 + 1e-6


class _RecordingOracle(ClassifierOracle):
    """Remembers every point it was asked, to count repeated queries."""

    def __init__(self, classifier: Classifier, *, deterministic: bool = True) -> None:
        super().__init__(classifier, deterministic=deterministic)
        self.asked: list[bytes] = []

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        self.asked.extend(row.numpy().tobytes() for row in x.detach().cpu())
        return super()._query(x)


def _repeats(oracle: _RecordingOracle) -> int:
    return len(oracle.asked) - len(set(oracle.asked))


def test_deterministic_oracle_is_never_asked_a_rejected_proposal_again(
    digits_cnn: Classifier, square_batch
) -> None:
    # eps 0.05 leaves most digits standing: the paper's draw with replacement soon asks
    # one-pixel proposals it already asked; avoiding repeats asks each point about once
    x, y = square_batch[0][:10], square_batch[1][:10]
    paper = _RecordingOracle(digits_cnn)
    SquareAttack(0.05, queries=1500, seed=0, avoid_repeats=False)(paper, x, y)
    ours = _RecordingOracle(digits_cnn)
    res = SquareAttack(0.05, queries=1500, seed=0)(ours, x, y)
    assert _repeats(paper) > len(paper.asked) // 2
    # a point comes back only when the search walks back to it after accepting a move or
    # a new window size re-creates it (about 2% of the queries here)
    assert _repeats(ours) <= len(ours.asked) // 20
    # samples that end at a local optimum of the smallest window stop early
    standing = res.clean_correct & ~res.success
    assert bool(standing.any())
    assert int(res.queries_per_sample[standing].min()) < 1500
    assert res.queries == len(ours.asked) < len(paper.asked) // 2


def test_avoiding_repeats_follows_the_oracle_and_keeps_the_attack_as_strong(
    digits_cnn: Classifier, digits_split
) -> None:
    """Both draws are random, so "as strong" is a claim about rates, tested on enough trials.

    One seed on 40 samples compared counts whose run-to-run spread (about +-3 samples)
    is larger than the tolerance it allowed (1): the result hung on the trained model's
    last bits, which differ with the number of torch threads. Two seeds on 200 samples
    (~380 attacked samples) hold the difference within 2% of the trials on 1 or 2 threads
    (measured: -3 to +4 samples per seed), while a systematically weaker attack fails.
    """
    _, test = digits_split
    x, y = test.x[:200], test.y[:200]
    paper_fooled = ours_fooled = trials = 0
    for seed in (0, 1):
        noisy = ClassifierOracle(digits_cnn, deterministic=False)
        paper = SquareAttack(0.1, queries=600, seed=seed)(noisy, x, y)
        standing = paper.clean_correct & ~paper.success
        # a possibly randomised oracle gets the paper's draw: resisting samples use it all
        assert torch.all(paper.queries_per_sample[standing] == 600)
        ours = SquareAttack(0.1, queries=600, seed=seed)(ClassifierOracle(digits_cnn), x, y)
        assert ours.queries < 0.7 * paper.queries
        paper_fooled += int(paper.success.sum())
        ours_fooled += int(ours.success.sum())
        trials += len(x)
    assert ours_fooled >= paper_fooled - 0.02 * trials


def test_changing_proposals_skip_windows_that_already_hold_the_vertex() -> None:
    from mlwarden.attacks.evasion._square_linf import build, changing_proposals

    x0 = torch.full((1, 1, 3, 3), 0.5)
    cur = x0 + 0.1  # every pixel at the +eps vertex
    changing = changing_proposals(x0, cur, (1, 1), 0.1, (0.0, 1.0))
    # layout: vertex -1 for the 9 positions, then vertex +1 for the 9 positions
    assert changing.shape == (1, 18)
    assert bool(changing[0, :9].all()) and not bool(changing[0, 9:].any())
    moved = build(x0, cur, torch.tensor([4]), (1, 1), 0.1, (0.0, 1.0))
    assert torch.isclose(moved[0, 0, 1, 1], torch.tensor(0.4))
    assert int((moved != cur).sum()) == 1
    # a pixel clipped at the bound cannot move to the other vertex: not a proposal
    at_bound = torch.zeros(1, 1, 3, 3)
    changing = changing_proposals(at_bound, at_bound, (1, 1), 0.1, (0.0, 1.0))
    assert not bool(changing[0, :9].any()) and bool(changing[0, 9:].all())
