"""Mutation fuzzing of valid model files: the scanner never crashes, never hangs, and
never calls a file safe when the real unpickler would import a non-safe global from it.

The oracle is CPython's own unpickler (``pickle._Unpickler``) with a ``find_class``
that records the first global requested and raises: it reads the bytes exactly as
``pickle.load`` does, yet can never run anything.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scan_corpus import Evil, _torch_zip, p0_global_open

from mlwarden.supplychain import Verdict, classify_import, scan_file
from mlwarden.supplychain.policy import ImportClass


class _Found(Exception):
    pass


class _Recorder(pickle._Unpickler):  # type: ignore[name-defined]
    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        raise _Found(module, name)

    def persistent_load(self, pid):  # type: ignore[no-untyped-def]
        return None


def first_global(data: bytes) -> tuple[str, str] | None:
    """The first global ``pickle.load`` would import from ``data`` (None: none, or one
    whose import cannot succeed here, so nothing would run)."""
    try:
        _Recorder(io.BytesIO(data)).load()
    except _Found as found:
        module, name = found.args
        top = module.split(".", 1)[0]
        if not top:
            return None  # __import__("") raises ValueError: an empty module name imports nothing
        if not top.isidentifier() and importlib.util.find_spec(top) is None:
            return None  # __import__ fails: no such module can exist on sys.path here
        return module, name
    except Exception:  # noqa: BLE001 - a broken pickle imports nothing
        return None
    return None


def _seeds() -> list[bytes]:
    canary = "/nonexistent-dir/CANARY"  # never loaded; the path cannot even be created
    return [
        pickle.dumps({"w": [1.0, 2.0], "p": Evil(canary)}, protocol=2),
        pickle.dumps({"w": [1.0, 2.0], "p": Evil(canary)}, protocol=4),
        p0_global_open(canary),
        pickle.dumps({"a": (1, "x"), "b": [None, True]}, protocol=0),
        pickle.dumps({"a": (1, "x"), "b": [None, True]}, protocol=5),
    ]


SEEDS = _seeds()
ZIP_SEED = _torch_zip({"p": Evil("/nonexistent-dir/CANARY")})


def _mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for pos, cut, insert in edits:
        at = pos % (len(data) + 1)
        data[at : at + cut] = insert
    return bytes(data)


_EDITS = st.lists(
    st.tuples(st.integers(0, 4096), st.integers(0, 4), st.binary(max_size=6)),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.timeout(120)
@given(seed=st.sampled_from(range(len(SEEDS))), edits=_EDITS)
def test_mutated_pickles(tmp_path: Path, seed: int, edits) -> None:
    data = _mutate(SEEDS[seed], edits)
    p = tmp_path / "m.bin"
    p.write_bytes(data)
    scan = scan_file(p, digest=False)
    assert not any("could not parse" in f.detail for f in scan.findings), scan.findings
    got = first_global(data)
    if got is not None and classify_import(*got) is not ImportClass.SAFE:
        assert scan.verdict is not Verdict.SAFE, (got, data)


@settings(
    max_examples=60,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.timeout(120)
@given(edits=_EDITS)
def test_mutated_torch_zips(tmp_path: Path, edits) -> None:
    data = _mutate(ZIP_SEED, edits)
    p = tmp_path / "m.pt"
    p.write_bytes(data)
    scan = scan_file(p, digest=False)
    assert not any("could not parse" in f.detail for f in scan.findings), scan.findings
    try:  # what torch.load's record lookup would unpickle, if the zip still opens
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            prefix = names[0].split("/", 1)[0]
            hit = next(n for n in names if n.lower() == f"{prefix}/data.pkl")
            member = zf.read(hit)
    except Exception:  # noqa: BLE001 - torch would not load it either
        return
    got = first_global(member)
    if got is not None and classify_import(*got) is not ImportClass.SAFE:
        assert scan.verdict is not Verdict.SAFE, got


@pytest.mark.timeout(60)
def test_seeds_are_what_the_fuzzer_expects() -> None:
    assert first_global(SEEDS[0]) is not None and first_global(SEEDS[3]) is None
