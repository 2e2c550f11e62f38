"""Shared fixtures: small real models trained once per test session.

Training happens in seconds on CPU; every test that needs a model uses these
instead of training its own, which keeps the suite fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from mlwarden.core import Classifier, InputSpec
from mlwarden.core.training import fit
from mlwarden.io.dataset import Dataset, load_builtin
from mlwarden.models import MLP, SmallCNN

# One thread: on a shared or small CI machine, oversubscribed OpenMP threads
# spin and slow training by an order of magnitude (measured: 93 s vs 1.8 s).
torch.set_num_threads(1)

# pytest-xdist (`--dist loadgroup`): the tests of one file run on one worker, so a module's
# fixtures are built once; so do the files that share an expensive session fixture, below.
SHARED_FIXTURE_GROUPS: dict[str, tuple[str, ...]] = {
    # the backdoor zoo of tests/defenses/conftest.py (a SmallCNN per attack, and their scans)
    "backdoor-zoo": (
        "tests/defenses/detection/",
        "tests/defenses/test_backdoor_cli.py",
        "tests/defenses/test_encoder_backdoor.py",
        "tests/defenses/test_front_door_parity.py",
        "tests/defenses/training/test_fineprune_unlearning.py",
    ),
    # the MiniLM students and victims of tests/text/conftest.py
    "text-students": ("tests/text/", "tests/gateway/test_text_gateway.py"),
}
ALONE: tuple[str, ...] = ("tests/text/test_demo_text.py",)
"""Files in a group's folder that use none of its fixtures: the longest test (the text demo,
which trains its own student) is free to run beside the group."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        try:
            rel = item.path.relative_to(root).as_posix()
        except ValueError:  # a test outside the tree (pytester)
            continue
        group = next(
            (g for g, files in SHARED_FIXTURE_GROUPS.items() if rel.startswith(files)), rel
        )
        if rel in ALONE:
            group = rel
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_builtin("digits")


@pytest.fixture(scope="session")
def digits_split(digits: Dataset) -> tuple[Dataset, Dataset]:
    """(train, test) = 75% / 25%, stratified, seed 0."""
    return digits.split(0.75, seed=0)


@pytest.fixture(scope="session")
def digits_spec(digits: Dataset) -> InputSpec:
    return digits.spec()


@pytest.fixture(scope="session")
def digits_cnn(digits_split: tuple[Dataset, Dataset], digits_spec: InputSpec) -> Classifier:
    """A SmallCNN trained on digits (~97% test accuracy). Do not train it further:
    copy it (``copy.deepcopy``) before changing weights."""
    train, _ = digits_split
    torch.manual_seed(0)
    module = SmallCNN()
    fit(module, train.x, train.y, epochs=15, lr=2e-3, batch_size=64, seed=0)
    return Classifier(module, digits_spec, name="digits-cnn")


@pytest.fixture(scope="session")
def digits_mlp(digits_split: tuple[Dataset, Dataset], digits_spec: InputSpec) -> Classifier:
    """An MLP on flattened digits wrapped to take (1, 8, 8) images."""
    train, _ = digits_split
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), MLP(64, 10, (64,)))
    fit(module, train.x, train.y, epochs=30, lr=3e-3, batch_size=64, seed=0)
    return Classifier(module, digits_spec, name="digits-mlp")


@pytest.fixture(scope="session")
def cancer() -> Dataset:
    return load_builtin("breast_cancer")


@pytest.fixture(scope="session")
def cancer_split(cancer: Dataset) -> tuple[Dataset, Dataset]:
    return cancer.split(0.7, seed=0)


@pytest.fixture(scope="session")
def cancer_mlp(cancer_split: tuple[Dataset, Dataset]) -> Classifier:
    train, _ = cancer_split
    torch.manual_seed(0)
    module = MLP(30, 2, (32,))
    fit(module, train.x, train.y, epochs=60, lr=3e-3, batch_size=32, seed=0)
    return Classifier(module, train.spec(), name="cancer-mlp")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("audit", "--model", ...)`` runs ``mlwarden`` in-process through its real entry
    point (errors become exit codes) and returns the code, stdout and stderr."""
    from mlwarden.cli.main import run

    def invoke(*args: str) -> CliResult:
        with pytest.raises(SystemExit) as exc:
            run(list(args))
        captured = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else 0
        return CliResult(code, captured.out, captured.err)

    return invoke
