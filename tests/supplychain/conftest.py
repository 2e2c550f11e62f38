"""Fixtures of the supply-chain scanner tests: the self-built corpus (see scan_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scan_corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("scan-corpus")
    return root, build_corpus(root)


@pytest.fixture(scope="session")
def corpus_v2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Bypass techniques from public advisories and benign files real users have."""
    from scan_corpus import build_corpus_v2

    root = tmp_path_factory.mktemp("scan-corpus-v2")
    return root, build_corpus_v2(root)
