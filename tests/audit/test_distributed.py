"""``mlwarden audit --ray``: shards on a real local Ray cluster merge into the one report.

What would break if the code were wrong: a shard lost or counted twice (coverage checks),
seeds tied to the worker count (Ray vs in-process shards), a retry that drops or repeats a
sample (the killed worker), a worker that loads without the gate (the unsafe file).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from mlwarden.core.errors import UnsafeArtefactError
from mlwarden.core.findings import Report
from mlwarden.evaluation.shards import (
    LocalExecutor,
    RobustnessShard,
    ShardError,
    check_coverage,
    evaluate_robustness_sharded,
    plan_shards,
    shard_seed,
)

EPS = [0.05, 0.1]
SAMPLES = 200
SHARD = 50
EVASION = {"preset": "pgd", "eps": EPS, "samples": SAMPLES, "min_robust_accuracy": 0.9}


# -- the plan and the merge (no cluster) --------------------------------------------------------
def test_plan_covers_every_sample_once_with_seeds_from_the_start() -> None:
    shards = plan_shards(130, 50, seed=7)
    assert [(s.start, s.stop) for s in shards] == [(0, 50), (50, 100), (100, 130)]
    assert [s.seed for s in shards] == [shard_seed(7, start) for start in (0, 50, 100)]
    assert len({s.seed for s in shards}) == 3
    assert shard_seed(7, 50) != shard_seed(8, 50)
    assert plan_shards(130, 50, seed=7) == shards  # a function of (n, size, seed) only


def _part(start: int, stop: int) -> RobustnessShard:
    ones = torch.ones(stop - start, dtype=torch.bool)
    return RobustnessShard(start, stop, torch.arange(start, stop), ones, {0.1: ones}, {})


def test_merge_fails_closed_on_a_missing_or_duplicated_shard() -> None:
    check_coverage([_part(0, 50), _part(50, 100)], 100)
    with pytest.raises(ShardError, match="50 sample\\(s\\) missing"):
        check_coverage([_part(0, 50)], 100)
    with pytest.raises(ShardError, match="50 duplicated"):
        check_coverage([_part(0, 50), _part(50, 100), _part(50, 100)], 100)
    bad = _part(50, 100)
    bad.indices = torch.arange(40, 90)  # the rows a worker says it evaluated
    with pytest.raises(ShardError, match="missing .* duplicated"):
        check_coverage([_part(0, 50), bad], 100)


def test_tampered_bytes_are_refused_before_any_load(mlp_file: Path) -> None:
    from dataclasses import replace

    from mlwarden.audit.distributed import ModelFiles, load_shipped

    files = ModelFiles.from_source(mlp_file)
    with pytest.raises(ShardError, match="SHA-256 differs"):
        load_shipped(replace(files, data=files.data[:-1] + bytes([files.data[-1] ^ 1])))


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_file(digits_mlp: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlwarden.io.export import save_pt2

    return save_pt2(digits_mlp, tmp_path_factory.mktemp("ray-model") / "mlp.pt2")


@pytest.fixture(scope="module")
def loaded(mlp_file: Path) -> Any:
    from mlwarden.io.models import load_model

    return load_model(mlp_file)


def _essence(metrics: dict[str, Any], findings: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    """What must match between runs: every metric but wall times, every finding's content."""
    kept = {k: v for k, v in metrics.items() if not k.endswith(".seconds")}
    rows = [(f["id"], f["severity"], f["evidence"]) for f in findings]
    return kept, sorted(rows, key=repr)


def _of(report: Report) -> tuple[dict[str, Any], list[Any]]:
    data = json.loads(report.model_dump_json())
    return _essence(data["metrics"], data["findings"])


@pytest.fixture(scope="module")
def reference(loaded: Any) -> tuple[dict[str, Any], list[Any]]:
    """The evasion check's result with the same shard plan, run in this process."""
    from mlwarden.evaluation.evasion import RobustnessSettings, run_robustness
    from mlwarden.io.dataset import load_builtin

    report = Report()
    run_robustness(
        loaded,
        load_builtin("digits"),
        RobustnessSettings(**EVASION),
        report,
        seed=0,
        executor=LocalExecutor(loaded),
        shard_size=SHARD,
    )
    assert any(f.id == "MLW-EVA-010" for f in report.findings)  # a finding to compare
    return _of(report)


def _audit(mlp_file: Path, tmp_path: Path, **audit: Any) -> Report:
    from mlwarden.audit.runner import run_audit
    from mlwarden.config import (
        AuditSection,
        DataSection,
        MlwardenConfig,
        ModelSection,
        validate_checks,
    )

    config = MlwardenConfig(
        model=ModelSection(path=str(mlp_file)),
        data=DataSection(source="digits"),
        audit=AuditSection(output_dir=str(tmp_path), formats=["json"], **audit),
        checks=validate_checks({"evasion": EVASION}),
    )
    return run_audit(config, write=False).report


# -- on the cluster -----------------------------------------------------------------------------
def test_sharded_equals_single_process_for_per_sample_deterministic_attacks(
    ray_cluster: Path, mlp_file: Path, loaded: Any, digits_split: Any
) -> None:
    from mlwarden.attacks.evasion import FGSM, PGD
    from mlwarden.audit.distributed import ModelFiles, RayExecutor
    from mlwarden.evaluation.robustness import evaluate_robustness, robustness_findings

    _, test = digits_split
    x, y = test.x[:SAMPLES], test.y[:SAMPLES]
    attacks = {e: [FGSM(e), PGD(e, steps=10, random_start=False)] for e in EPS}
    single = evaluate_robustness(loaded, x, y, EPS, attacks=attacks)
    executor = RayExecutor("auto").connect()
    executor.bind(ModelFiles.from_source(mlp_file))
    sharded = evaluate_robustness_sharded(
        loaded, x, y, EPS, attacks=attacks, executor=executor, shard_size=SHARD
    )
    executor.close()
    assert [sharded.robust_accuracy(e) for e in EPS] == [single.robust_accuracy(e) for e in EPS]
    for e in EPS:
        assert torch.equal(sharded.robust[e], single.robust[e])
        assert torch.equal(sharded.x_adv[e], single.x_adv[e])
    assert sharded.robust_accuracy(0.1) < sharded.clean_accuracy  # the attacks did fool some
    cost = [(c.attack, c.eps, c.attacked, c.fooled, c.gradient_evaluations) for c in single.costs]
    assert [
        (c.attack, c.eps, c.attacked, c.fooled, c.gradient_evaluations) for c in sharded.costs
    ] == cost
    keys = [(f.id, f.severity, f.evidence) for f in robustness_findings(single, 0.9)]
    assert [(f.id, f.severity, f.evidence) for f in robustness_findings(sharded, 0.9)] == keys
    assert keys  # a HIGH finding below 90% robust accuracy, in both


def test_audit_on_ray_equals_the_same_shards_in_process(
    ray_cluster: Path, mlp_file: Path, reference: Any, tmp_path: Path
) -> None:
    report = _audit(mlp_file, tmp_path, ray="auto", shard_size=SHARD)
    assert report.subject["sharded"]["engine"] == "ray"
    assert [c.status for c in report.checks] == ["failed"]  # the HIGH finding at fail_on high
    assert report.metrics["evasion.pgd.linf.samples"] == SAMPLES
    assert _of(report) == reference


def test_a_worker_killed_mid_audit_still_gives_the_full_report(
    ray_cluster: Path, mlp_file: Path, reference: Any, tmp_path: Path
) -> None:
    armed = ray_cluster / f"crash-{SHARD}"  # the second shard's first attempt dies
    armed.touch()
    report = _audit(mlp_file, tmp_path, ray="auto", shard_size=SHARD)
    assert not armed.exists()  # a worker really took the os._exit
    assert report.metrics["evasion.pgd.linf.samples"] == SAMPLES
    assert _of(report) == reference  # retried once: no sample missing, none twice


def test_every_worker_gates_the_model_before_loading(
    ray_cluster: Path, tmp_path: Path, loaded: Any, digits_split: Any
) -> None:
    import os

    from mlwarden.audit.distributed import ModelFiles, RayExecutor

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "weights.pt"
    evil.write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    executor = RayExecutor("auto").connect()
    executor.bind(ModelFiles.from_source(evil, factory="mlwarden.models:SmallCNN"))
    _, test = digits_split
    with pytest.raises(UnsafeArtefactError, match="weights.pt"):
        evaluate_robustness_sharded(
            loaded, test.x[:20], test.y[:20], EPS, executor=executor, preset="pgd", shard_size=10
        )
    executor.close()
    assert not marker.exists()


def test_cli_ray_flag_overrides_the_config_and_writes_the_report(
    ray_cluster: Path, cli: Any, mlp_file: Path, reference: Any, tmp_path: Path
) -> None:
    toml = tmp_path / "mlwarden.toml"
    toml.write_text(
        '[audit]\nray = "127.0.0.1:1"\nformats = ["json"]\n'
        f"[checks.evasion]\npreset = \"pgd\"\neps = {EPS}\nsamples = {SAMPLES}\n"
        "min_robust_accuracy = 0.9\n",
        encoding="utf-8",
    )
    out = tmp_path / "report"
    result = cli(
        "audit", "-c", str(toml), "--model", str(mlp_file), "--data", "digits",
        "--ray", "auto", "--shard-size", str(SHARD), "-o", str(out), "--no-progress",
    )  # fmt: skip
    assert result.code == 1, result.err  # FAILED on the HIGH finding, as without Ray
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    evasion = [f for f in data["findings"] if f["check"] == "evasion"]
    assert _essence(data["metrics"], evasion) == reference


# -- errors and the path without Ray --------------------------------------------------------------
def test_a_bad_address_is_one_clear_line(cli: Any, mlp_file: Path) -> None:
    base = ("audit", "--model", str(mlp_file), "--data", "digits", "--check", "evasion")
    result = cli(*base, "--ray", "127.0.0.1:1")
    assert result.code == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in result.err
    assert "Traceback" not in result.err + result.out
    result = cli(*base, "--ray", "not an address")
    assert result.code == 2 and "not auto, local, HOST:PORT" in result.err


def test_a_bad_address_in_the_config_names_the_key(
    cli: Any, mlp_file: Path, tmp_path: Path
) -> None:
    toml = tmp_path / "mlwarden.toml"
    toml.write_text('[audit]\nray = "10.0.0.5"\n', encoding="utf-8")  # no port
    result = cli("audit", "-c", str(toml), "--model", str(mlp_file), "--data", "digits")
    assert result.code == 2
    assert "audit.ray" in result.err and "HOST:PORT" in result.err


def test_without_ray_installed_the_message_names_the_extra(
    cli: Any, mlp_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = cli("audit", "--model", str(mlp_file), "--data", "digits", "--ray", "auto")
    assert result.code == 2
    assert "mlwarden[distributed]" in result.err and "Traceback" not in result.err


def test_without_ray_the_audit_runs_in_process_as_before(
    mlp_file: Path, loaded: Any, tmp_path: Path
) -> None:
    from mlwarden.evaluation.evasion import RobustnessSettings, run_robustness
    from mlwarden.io.dataset import load_builtin

    report = _audit(mlp_file, tmp_path)
    assert "sharded" not in report.subject
    direct = Report()
    run_robustness(loaded, load_builtin("digits"), RobustnessSettings(**EVASION), direct, seed=0)
    assert _of(report) == _of(direct)
