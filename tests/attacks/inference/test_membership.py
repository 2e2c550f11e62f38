"""Membership inference finds the members of an overfitted model; DP-SGD hides them."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.inference import LiRA, ThresholdAttack, membership_metrics
from mlwarden.core import Classifier, ClassifierOracle, InputSpec, OracleError, ParameterError
from mlwarden.core.errors import DataError
from mlwarden.core.training import fit
from mlwarden.evaluation.privacy import membership_audit
from mlwarden.io.dataset import Dataset
from mlwarden.models import MLP


@pytest.fixture(scope="module")
def split(digits) -> tuple[Dataset, Dataset, InputSpec]:
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(digits), generator=gen)[:600]
    x, y = digits.x[idx].flatten(1), digits.y[idx]
    spec = InputSpec(shape=(64,), class_names=digits.class_names)
    names = digits.class_names
    return Dataset(x[:300], y[:300], names), Dataset(x[300:], y[300:], names), spec


@pytest.fixture(scope="module")
def overfitted(split) -> Classifier:
    members, _, spec = split
    torch.manual_seed(0)
    module = MLP(64, 10, (128,))
    fit(module, members.x, members.y, epochs=80, lr=2e-3, seed=0)
    return Classifier(module, spec)


@pytest.fixture(scope="module")
def overfit_report(overfitted, split):
    members, non_members, _ = split
    return membership_audit(overfitted, members, non_members,
                            attacks=["threshold", "lira-offline", "lira-online"],
                            shadow_models=6, shadow_epochs=60, shadow_lr=2e-3, seed=0)


def test_overfitted_model_leaks_membership(overfit_report):
    m = overfit_report.metrics
    assert m["privacy.lira-offline.auc"] > 0.58
    assert m["privacy.lira-offline.tpr@1%fpr"] > 0.02  # well above the 1% of chance
    assert m["privacy.threshold.auc"] > 0.53
    assert [f.id for f in overfit_report.findings] == ["MLW-PRIV-001"]
    assert overfit_report.findings[0].atlas == ["AML.T0024.000"]
    roc = overfit_report.figures[0]
    assert roc.log_x and roc.log_y and len(roc.series) == 4


def test_dp_sgd_lowers_leakage(split, overfit_report):
    from mlwarden.defenses.training.dp import fit_private

    members, non_members, spec = split
    torch.manual_seed(0)
    module = MLP(64, 10, (128,))
    out = fit_private(module, members.x, members.y, target_epsilon=2.0, epochs=60, lr=1e-2, seed=0)
    assert out.epsilon <= 2.0 + 1e-6
    private = Classifier(module, spec)
    assert private.accuracy(non_members.x, non_members.y) > 0.6  # useful, at a stated cost
    report = membership_audit(private, members, non_members, attacks=["threshold", "lira-offline"],
                              shadow_models=6, shadow_epochs=60, shadow_lr=2e-3, seed=0)
    before = overfit_report.metrics["privacy.lira-offline.auc"]
    after = report.metrics["privacy.lira-offline.auc"]
    assert after < before - 0.03
    assert report.metrics["privacy.threshold.auc"] < 0.56


def test_same_seed_same_scores(overfitted, split):
    members, non_members, _ = split
    kw = dict(attacks=["lira-online"], shadow_models=2, shadow_epochs=3, seed=7)
    a = membership_audit(overfitted, members.take(20), non_members.take(20), **kw)
    b = membership_audit(overfitted, members.take(20), non_members.take(20), **kw)
    assert a.metrics == b.metrics


def test_bad_parameters_and_oracles(overfitted, split):
    members, non_members, _ = split
    with pytest.raises(ParameterError, match="shadow_models"):
        LiRA(shadow_models=1)
    with pytest.raises(ParameterError, match="variant"):
        LiRA(variant="sideways")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="attacks"):
        membership_audit(overfitted, members, non_members, attacks=["guess"])
    with pytest.raises(DataError, match="at least 2"):
        membership_audit(overfitted, members.take(1), non_members)
    labels_only = ClassifierOracle(overfitted, output="labels")
    with pytest.raises(OracleError, match="labels only"):
        ThresholdAttack().score(labels_only, members.x[:4], members.y[:4])
    with pytest.raises(DataError, match="both members and non-members"):
        membership_metrics(torch.rand(4), torch.ones(4, dtype=torch.bool))


# -- the runner behind `privacy audit` and the `privacy` check: requirements first -------------
def test_label_only_oracle_gets_the_contract_error(overfitted, split):
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.privacy import PrivacySettings, run_privacy

    members, non_members, _ = split
    labels_only = ClassifierOracle(overfitted, output="labels")
    with pytest.raises(ParameterError, match="membership inference needs class scores; .* is a "
                                             "label-only oracle"):
        run_privacy(labels_only, members, non_members, PrivacySettings(), Report())
    assert labels_only.queries == 0


def test_score_oracle_runs_the_threshold_attack_unless_lira_is_named(overfitted, split):
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.privacy import PrivacySettings, run_privacy

    members, non_members, _ = split
    oracle = ClassifierOracle(overfitted)
    named = PrivacySettings(attacks=["threshold", "lira-offline"])
    with pytest.raises(ParameterError, match="needs trainable weights; .* is a score oracle"):
        run_privacy(oracle, members, non_members, named, Report())
    assert oracle.queries == 0  # refused before any query
    report = run_privacy(oracle, members, non_members, PrivacySettings(samples=50), Report())
    assert [f.id for f in report.findings][0] == "MLW-PRIV-002"
    assert report.findings[0].evidence == {"ran": ["threshold"], "skipped": ["lira-offline"]}
    assert not any(k.startswith("privacy.lira") for k in report.metrics)
    assert report.metrics["privacy.members"] == 50


def test_shadow_factory_lets_lira_attack_a_score_oracle(overfitted, split):
    """With ``shadow_training`` the shadows need no copy of the target's weights."""
    from mlwarden.attacks.inference import ShadowTraining
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.privacy import PrivacySettings, run_privacy

    members, non_members, spec = split
    shadows = ShadowTraining(MLP(64, 10, (128,)), spec, epochs=3, lr=2e-3)
    settings = PrivacySettings(attacks=["lira-offline"], shadow_models=2, samples=20)
    report = run_privacy(ClassifierOracle(overfitted), members, non_members, settings, Report(),
                         shadow_training=shadows)
    assert 0.0 <= report.metrics["privacy.lira-offline.auc"] <= 1.0
    assert report.headline == ["privacy.lira-offline.auc", "privacy.lira-offline.tpr@1%fpr"]


def test_scores_of_confident_records_do_not_tie(overfitted, split):
    """In float32 the records the overfitted model is sure of all read p = 1.0 and tie;
    scores from float64 log-probabilities keep them apart."""
    members, _, spec = split

    class Sharpened(torch.nn.Module):  # the overfitted model, ten times as sure of itself
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 10 * self.inner(x)

    oracle = ClassifierOracle(Classifier(Sharpened(overfitted.module), spec))
    p32 = oracle(members.x).gather(1, members.y.view(-1, 1)).squeeze(1)
    saturated = p32 == 1.0
    assert int(saturated.sum()) >= 10  # the regime the fix is about
    scores = ThresholdAttack("logit").score(oracle, members.x, members.y)
    assert scores.dtype == torch.float64
    top = scores[saturated]
    assert len(torch.unique(top)) == len(top)
    # the audit's threshold baseline ranks by the same stable logit
    report = membership_audit(oracle, members, split[1], attacks=["threshold"])
    assert report.tables[-1].rows[0][2] != report.tables[-1].rows[1][2]
    from mlwarden.attacks.inference.threshold import membership_logit

    logit = membership_logit(oracle, members.x[saturated], members.y[saturated])
    assert bool(torch.isfinite(logit).all()) and float(logit.min()) > 10


def test_shadows_of_a_dp_target_are_trained_with_dp_sgd(overfitted, split, monkeypatch):
    """LiRA's calibration assumes shadows trained like the target: DP-SGD for a DP model."""
    import mlwarden.defenses.training.dp as dp

    calls: list[dict] = []
    real = dp.fit_private

    def spy(module, x, y, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        return real(module, x, y, **kwargs)

    monkeypatch.setattr(dp, "fit_private", spy)
    members, non_members = split[0].take(40), split[1].take(40)
    common = {"attacks": ["lira-offline"], "shadow_models": 2, "shadow_epochs": 2}
    plain = membership_audit(overfitted, members, non_members, **common)
    assert calls == [] and plain.metrics["privacy.shadow.dp"] == 0.0
    report = membership_audit(overfitted, members, non_members, dp_epsilon=4.0,
                              dp_max_grad_norm=0.7, **common)
    assert len(calls) == 2
    assert all(c["target_epsilon"] == 4.0 and c["max_grad_norm"] == 0.7 and c["epochs"] == 2
               for c in calls)
    recipe = dict(next(t for t in report.tables if t.id == "lira-shadow-recipe").rows)
    assert recipe["training"] == "DP-SGD" and recipe["dp_epsilon"] == 4.0
    assert report.metrics["privacy.shadow.dp"] == 1.0


def test_an_attack_that_ranks_members_last_is_reported_as_no_measure(overfitted, split):
    """Records the model never saw, with wrong labels, called members, and its training
    records called non-members: the threshold AUC falls far under 0.5. That is a wrong model
    of the target, stated as MLW-PRIV-003, and it raises no leak finding."""
    members, non_members, _ = split
    mislabelled = Dataset(non_members.x, (non_members.y + 1) % 10, non_members.class_names)
    report = membership_audit(overfitted, mislabelled, members, attacks=["threshold"])
    assert report.metrics["privacy.threshold.auc"] < 0.4
    (note,) = [f for f in report.findings if f.id == "MLW-PRIV-003"]
    assert note.severity.value == "info" and note.evidence["attack"] == "threshold"
    assert "not trained the way" in note.detail
    assert not [f for f in report.findings if f.id == "MLW-PRIV-001"]
    honest = membership_audit(overfitted, members, non_members, attacks=["threshold"])
    assert not [f for f in honest.findings if f.id == "MLW-PRIV-003"]
