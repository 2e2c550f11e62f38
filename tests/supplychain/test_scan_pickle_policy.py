"""The static reader and the import policy on real checkpoints and edge cases."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.supplychain import ImportClass, Verdict, classify_import, scan_file
from mlwarden.supplychain.pickle_reader import read_pickle


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        ("torch._utils", "_rebuild_tensor_v2", ImportClass.SAFE),
        ("collections", "OrderedDict", ImportClass.SAFE),
        ("numpy._core.multiarray", "_reconstruct", ImportClass.SAFE),
        ("builtins", "set", ImportClass.SAFE),
        ("os", "system", ImportClass.DANGEROUS),
        ("posix", "system", ImportClass.DANGEROUS),
        ("builtins", "getattr", ImportClass.DANGEROUS),
        (
            "torch",
            "serialization.os.system",
            ImportClass.DANGEROUS,
        ),  # dotted, attribute by attribute
        ("pydoc", "pipepager", ImportClass.DANGEROUS),
        ("cProfile", "run", ImportClass.DANGEROUS),
        ("timeit", "timeit", ImportClass.DANGEROUS),
        ("types", "CodeType", ImportClass.DANGEROUS),
        ("torch", "load", ImportClass.DANGEROUS),
        ("collections", "OrderedDict.__class__", ImportClass.DANGEROUS),
        ("sklearn.linear_model", "LogisticRegression", ImportClass.UNKNOWN),
        ("torch._utils", "_rebuild_tensor_v2.x", ImportClass.UNKNOWN),  # only exact names are safe
    ],
)
def test_import_classes(module: str, name: str, expected: ImportClass) -> None:
    assert classify_import(module, name) is expected


def test_allow_accepts_reviewed_imports_but_never_dangerous_ones() -> None:
    assert classify_import("sklearn.svm", "SVC", ["sklearn.svm.SVC"]) is ImportClass.SAFE
    assert classify_import("sklearn.svm", "SVC", ["sklearn.*"]) is ImportClass.SAFE
    assert classify_import("sklearn.svm", "SVC", ["sklearn.svm.NuSVC"]) is ImportClass.UNKNOWN
    assert classify_import("os", "system", ["os.system"]) is ImportClass.DANGEROUS


def test_real_trained_model_files(tmp_path: Path, digits) -> None:
    """A trained model's state dict is safe; pickling the whole module needs a review."""
    from mlwarden.models import MLP

    torch.manual_seed(0)
    model = MLP(in_features=64, num_classes=10, hidden=(32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = digits.x.reshape(len(digits), -1).float(), digits.y
    for _ in range(10):  # a short real training run: the file holds learned weights
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    digits_mlp = model
    sd_path = tmp_path / "mlp.pt"
    torch.save(digits_mlp.state_dict(), sd_path)
    assert scan_file(sd_path).verdict is Verdict.SAFE
    whole = tmp_path / "whole.pt"
    torch.save(copy.deepcopy(digits_mlp), whole)
    scan = scan_file(whole)
    assert scan.verdict is Verdict.SUSPICIOUS
    reviewed = sorted({f"{f.evidence['module']}.{f.evidence['name']}" for f in scan.findings})
    assert any("mlwarden" in r for r in reviewed)
    assert scan_file(whole, allow=reviewed).verdict is Verdict.SAFE


def test_reader_skips_large_payloads_without_copying() -> None:
    blob = pickle.dumps({"big": b"\x00" * (8 << 20)}, protocol=4)
    trace = read_pickle(blob)
    assert trace.complete and trace.opcodes < 20


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=512))
def test_reader_never_raises_on_random_bytes(data: bytes) -> None:
    trace = read_pickle(data)
    assert trace.complete or trace.error or trace.limit


@settings(max_examples=25, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=20)
        | st.binary(max_size=20),
        lambda c: (
            st.lists(c, max_size=4)
            | st.dictionaries(st.text(max_size=5), c, max_size=4)
            | st.tuples(c, c)
        ),
        max_leaves=20,
    ),
    st.integers(0, 5),
)
def test_plain_data_pickles_are_safe_in_every_protocol(value, protocol: int) -> None:
    data = pickle.dumps(value, protocol=protocol)
    trace = read_pickle(data)
    assert trace.complete and trace.end == len(data)
    assert not trace.calls or all(
        c.callee is not None and classify_import(c.callee.module, c.callee.name) is ImportClass.SAFE
        for c in trace.calls
    )
