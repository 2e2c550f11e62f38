"""Load labelled text from ``.jsonl``, ``.csv``, ``.tsv`` or a folder saved by ``datasets``.

Columns are named (``text`` and ``label`` by default). Labels are class names
(``"positive"``) or integer indices; with ``class_names`` given (a model's, say) every
label must be one of them, otherwise the class names are the sorted distinct labels.
Every problem is a `DataError` that names the file and the line or row:

* bytes that are not UTF-8 (the line and byte offset are named);
* an empty or whitespace-only text;
* a label outside the class names, or a missing column;
* a text over ``max_chars`` characters (`DEFAULT_MAX_CHARS`), refused before any
  tokenizer runs.

A name in `mlwarden.io.text_builtin.BUILTIN_TEXT` (``rotten_tomatoes``: real review
sentences) that is not a file loads the built-in data set, as ``digits`` does for tensors.

Against a text model, `check_token_lengths` counts tokens: texts over the model's
``max_tokens`` are truncated by the model (``overlong="truncate"``, the count is returned
so a report can state it) or refused (``overlong="error"``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mlwarden.core.errors import DataError, ParameterError, first_line, require
from mlwarden.io.text_builtin import is_builtin_text, load_builtin_text

TEXT_SUFFIXES = (".jsonl", ".csv", ".tsv")
DEFAULT_MAX_CHARS = 100_000
"""Characters per text above which a file is refused (about 25k tokens: no text model
reads that much, and a 1 MB "review" is more likely an attack on the tokenizer)."""
_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class TextDataset:
    """Texts, integer labels ``(N,)`` (``None`` for unlabelled text) and class names."""

    texts: tuple[str, ...]
    labels: torch.Tensor | None
    class_names: tuple[str, ...] | None
    name: str = "text"

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise DataError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | torch.Tensor) -> TextDataset:
        idx = [int(i) for i in index]
        labels = self.labels[idx] if self.labels is not None else None
        return TextDataset(tuple(self.texts[i] for i in idx), labels, self.class_names, self.name)

    def take(self, n: int) -> TextDataset:
        return self.subset(range(min(n, len(self))))

    def split(self, fraction: float, seed: int = 0) -> tuple[TextDataset, TextDataset]:
        """Shuffle with ``seed`` and split into (first ``fraction``, rest), stratified by label
        (labelled text only), as `Dataset.split` does."""
        from mlwarden.io.dataset import stratified_split

        if self.labels is None:
            raise DataError(f"{self.name}: unlabelled text cannot be split by label")
        a, b = stratified_split(self.labels, fraction, seed)
        return self.subset(a), self.subset(b)


def load_text_data(
    source: str | Path,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    class_names: Sequence[str] | None = None,
    split: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> TextDataset:
    """Read ``source`` (see the module docstring); ``label_column=None`` reads texts only."""
    if max_chars <= 0:
        raise ParameterError(f"max_chars must be positive, got {max_chars}")
    path = Path(source)
    if not path.exists() and is_builtin_text(source):
        return _builtin(str(source), class_names)
    if not path.exists():
        raise DataError(f"text data '{path}' does not exist")
    if path.is_dir():
        if not any((path / m).is_file() for m in _DATASETS_MARKERS):
            raise DataError(
                f"'{path}' is a folder but not one saved by datasets' save_to_disk "
                f"(no {', '.join(_DATASETS_MARKERS)}); give a {', '.join(TEXT_SUFFIXES)} file"
            )
        rows, names = _read_saved_dataset(path, text_column, label_column, split)
        class_names = class_names if class_names is not None else names
    else:
        suffix = path.suffix.lower()
        if suffix not in TEXT_SUFFIXES:
            raise DataError(
                f"unknown text data format '{suffix or path.name}' for '{path}'; use one of "
                f"{', '.join(TEXT_SUFFIXES)} or a folder saved by datasets"
            )
        content = _read_utf8(path)
        if suffix == ".jsonl":
            rows = _jsonl_rows(content, path, text_column, label_column)
        else:
            rows = _table_rows(content, path, "\t" if suffix == ".tsv" else ",", text_column,
                               label_column)
    if not rows:
        raise DataError(f"'{path}' holds no rows")
    texts = tuple(_check_text(text, path, where, max_chars) for where, text, _ in rows)
    if label_column is None:
        return TextDataset(texts, None, tuple(class_names) if class_names else None, path.name)
    labels, names = _labels([(where, label) for where, _, label in rows], path, class_names)
    return TextDataset(texts, labels, names, path.name)


def check_token_lengths(
    data: TextDataset, model: Any, *, overlong: Literal["truncate", "error"] = "truncate"
) -> int:
    """How many texts of ``data`` exceed ``model``'s ``max_tokens`` (they are truncated), or a
    `DataError` with ``overlong="error"``. Text models only (a tensor model is refused)."""
    from mlwarden.core.text import as_text_model

    text_model = as_text_model(model, by="checking text lengths")
    if overlong not in ("truncate", "error"):
        raise ParameterError(f"overlong must be 'truncate' or 'error', got {overlong!r}")
    limit = text_model.spec.max_tokens
    counts = text_model.token_counts(list(data.texts))
    over = [i for i, n in enumerate(counts) if n > limit]
    if over and overlong == "error":
        raise DataError(
            f"{data.name}: {len(over)} text(s) exceed the model's {limit} tokens (the first is "
            f"row {over[0] + 1}, {counts[over[0]]} tokens); shorten them or allow truncation"
        )
    return len(over)


def _builtin(name: str, class_names: Sequence[str] | None) -> TextDataset:
    """A built-in data set, its labels checked against ``class_names`` if given (a model's)."""
    data = load_builtin_text(name)
    if class_names is not None and data.class_names is not None:
        if tuple(class_names) != data.class_names:
            raise DataError(
                f"'{name}' has classes {', '.join(data.class_names)}, the model "
                f"{', '.join(class_names)}"
            )
    return data


# -- reading ----------------------------------------------------------------------------------
def _read_utf8(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"'{path}' is not UTF-8: line {line}, byte {exc.start} (0x{raw[exc.start]:02x}); "
            "re-encode the file as UTF-8"
        ) from None


Row = tuple[str, Any, Any]
"""(where, text, label): ``where`` names the line for messages."""


def _jsonl_rows(content: str, path: Path, text_col: str, label_col: str | None) -> list[Row]:
    rows: list[Row] = []
    for no, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"'{path}' line {no} is not JSON: {first_line(exc)}") from None
        if not isinstance(record, dict):
            raise DataError(f"'{path}' line {no} is a JSON {type(record).__name__}, not an object")
        where = f"line {no}"
        rows.append((where, _field(record, text_col, path, where),
                     _field(record, label_col, path, where) if label_col else None))
    return rows


def _table_rows(
    content: str, path: Path, delimiter: str, text_col: str, label_col: str | None
) -> list[Row]:
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"'{path}' is empty") from None
    except csv.Error as exc:
        raise DataError(f"'{path}' line 1: {exc}") from None
    wanted = [c for c in (text_col, label_col) if c]
    absent = [c for c in wanted if c not in header]
    if absent:
        raise DataError(
            f"'{path}' has no column {', '.join(repr(c) for c in absent)}; its columns are "
            f"{', '.join(repr(c) for c in header)} (name them with text_column/label_column)"
        )
    t_idx = header.index(text_col)
    l_idx = header.index(label_col) if label_col else None
    rows: list[Row] = []
    try:
        for cells in reader:
            where = f"line {reader.line_num}"
            if not cells:
                continue
            if len(cells) != len(header):
                raise DataError(
                    f"'{path}' {where} has {len(cells)} cells; the header has {len(header)}"
                )
            rows.append((where, cells[t_idx], cells[l_idx] if l_idx is not None else None))
    except csv.Error as exc:
        raise DataError(f"'{path}' line {reader.line_num}: {exc}") from None
    return rows


def _read_saved_dataset(
    path: Path, text_col: str, label_col: str | None, split: str | None
) -> tuple[list[Row], tuple[str, ...] | None]:
    """Rows of a ``datasets.save_to_disk`` folder (Arrow files, no pickle) and the label
    names its ``ClassLabel`` feature declares."""
    datasets: Any = require("datasets", "text")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - FileNotFoundError, ArrowInvalid, JSON errors
        raise DataError(f"cannot read '{path}' as a saved dataset: {first_line(exc)}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise DataError(
                f"'{path}' holds the splits {', '.join(sorted(loaded))}; choose one with split="
            )
        loaded = loaded[split]
    absent = [c for c in (text_col, label_col) if c and c not in loaded.column_names]
    if absent:
        raise DataError(
            f"'{path}' has no column {', '.join(repr(c) for c in absent)}; its columns are "
            f"{', '.join(repr(c) for c in loaded.column_names)}"
        )
    names = None
    if label_col:
        feature = loaded.features[label_col]
        names = tuple(feature.names) if hasattr(feature, "names") else None
    texts = loaded[text_col]
    labels = loaded[label_col] if label_col else [None] * len(texts)
    return [(f"row {i + 1}", t, lab) for i, (t, lab) in enumerate(zip(texts, labels,
                                                                       strict=True))], names


# -- validating -------------------------------------------------------------------------------
def _field(record: dict[str, Any], column: str, path: Path, where: str) -> Any:
    if column not in record:
        raise DataError(
            f"'{path}' {where} has no field '{column}'; its fields are "
            f"{', '.join(repr(k) for k in record)}"
        )
    return record[column]


def _check_text(text: Any, path: Path, where: str, max_chars: int) -> str:
    if not isinstance(text, str):
        raise DataError(f"'{path}' {where}: the text is a {type(text).__name__}, not a string")
    if not text.strip():
        raise DataError(f"'{path}' {where}: the text is empty")
    if len(text) > max_chars:
        raise DataError(
            f"'{path}' {where}: the text has {len(text)} characters, over the limit of "
            f"{max_chars} (max_chars)"
        )
    return text


def _labels(
    rows: list[tuple[str, Any]], path: Path, class_names: Sequence[str] | None
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Integer labels, and the class names they index."""
    for where, label in rows:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(
                f"'{path}' {where}: the label is a {type(label).__name__}; give a class name "
                "or an integer index"
            )
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        index = {n: i for i, n in enumerate(names)}
        out = []
        for where, label in rows:
            i = _index_of(label, index, len(names))
            if i is None:
                raise DataError(
                    f"'{path}' {where}: label {label!r} is not one of the classes "
                    f"{', '.join(names)} (or an index 0..{len(names) - 1})"
                )
            out.append(i)
        return torch.tensor(out, dtype=torch.long), names
    values = [label for _, label in rows]
    if all(isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()) for v in values):
        ints = [int(v) for v in values]
        if min(ints) < 0:
            raise DataError(f"'{path}': integer labels must be non-negative")
        names = tuple(str(i) for i in range(max(ints) + 1))
        return torch.tensor(ints, dtype=torch.long), names
    text_labels = [str(v) for v in values]
    names = tuple(sorted(set(text_labels)))
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[v] for v in text_labels], dtype=torch.long), names


def _index_of(label: str | int, index: dict[str, int], n: int) -> int | None:
    if isinstance(label, str) and label in index:
        return index[label]
    text = str(label).strip()
    if text.isdigit() and int(text) < n:
        return int(text)
    return None


__all__ = [
    "DEFAULT_MAX_CHARS",
    "TEXT_SUFFIXES",
    "TextDataset",
    "check_token_lengths",
    "load_text_data",
]
