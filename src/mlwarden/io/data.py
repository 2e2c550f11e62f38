"""Load labelled evaluation data from files, validated against a model's `InputSpec`.

Sources, in the order they are recognised:

* a built-in name: ``digits``, ``breast_cancer`` (shipped with scikit-learn);
* ``data.npz`` with arrays ``x`` and ``y`` (optional ``class_names``);
* a ``.npy`` pair: ``inputs.npy:labels.npy`` explicitly, or one ``*x.npy`` file
  whose sibling ``*y.npy`` holds the labels (``x.npy``/``y.npy``,
  ``train_x.npy``/``train_y.npy``, ``X_test.npy``/``y_test.npy``);
* a ``.csv`` with a header row, one label column and numeric feature columns
  (flattened inputs are reshaped to the spec's shape);
* a folder with one sub-folder of images per class (``root/<class>/*.png``),
  scaled to [0, 1]; sizes must match the spec, images are never silently resized.

Arrays are read with ``allow_pickle=False`` always. Labels must be integer class
indices. Every problem raises `DataError` naming the file, key, row or column.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mlwarden.core.errors import DataError, first_line
from mlwarden.core.spec import InputSpec
from mlwarden.io.dataset import BUILTIN, Dataset, load_builtin

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def load_data(
    source: str | Path, *, spec: InputSpec | None = None, label_column: str = "label"
) -> Dataset:
    """Load ``source`` as a `Dataset`; validate it against ``spec`` when one is given."""
    text = str(source)
    if text in BUILTIN and not Path(text).exists():
        data = load_builtin(text)
        return validate_dataset(data, spec, what=f"built-in data set '{text}'")
    if ":" in text and not Path(text).exists():
        x_part, _, y_part = text.rpartition(":")
        if x_part.endswith(".npy") and y_part.endswith(".npy"):
            return _load_npy_pair(Path(x_part), Path(y_part), spec)
    path = Path(text)
    if not path.exists():
        raise DataError(
            f"data source '{text}' does not exist (and is not one of the built-in sets "
            f"{', '.join(BUILTIN)})"
        )
    if path.is_dir():
        return _load_image_folder(path, spec)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, spec)
    if suffix == ".npy":
        return _load_npy_pair(path, _sibling_labels(path), spec)
    if suffix == ".csv":
        return _load_csv(path, spec, label_column)
    raise DataError(
        f"unknown data format '{suffix or path.name}' for '{path}'; use .npz, .npy, .csv, "
        "a folder of images per class, or a built-in name"
    )


# -- arrays ---------------------------------------------------------------------------------
def _load_npz(path: Path, spec: InputSpec | None) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"'{path}' is not a readable .npz file: {first_line(exc)}") from exc
    with archive:
        keys = list(archive.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise DataError(
                f"'{path.name}' lacks key(s) {', '.join(missing)}; it holds "
                f"{', '.join(keys) or 'no arrays'} (expected 'x' for inputs and 'y' for labels)"
            )
        x = _read_member(archive, "x", path)
        y = _read_member(archive, "y", path)
        names = None
        if "class_names" in keys:
            raw = _read_member(archive, "class_names", path)
            if raw.dtype.kind not in "US" or raw.ndim != 1:
                raise DataError(f"'{path.name}': class_names must be a 1-D array of strings")
            names = tuple(str(s) for s in raw.tolist())
    return _build(x, y, names, spec, path.name)


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:  # object arrays need pickle, which we never allow
        raise DataError(
            f"'{path.name}': array '{key}' cannot be read without pickle ({first_line(exc)}); "
            "save plain numeric arrays"
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"'{path.name}': array '{key}' is corrupt: {first_line(exc)}") from exc


def _sibling_labels(x_path: Path) -> Path:
    stem = x_path.stem
    candidates: list[Path] = []
    if stem and stem[-1] in "xX":
        candidates.append(x_path.with_name(stem[:-1] + ("y" if stem[-1] == "x" else "Y") + ".npy"))
        candidates.append(x_path.with_name(stem[:-1] + "y.npy"))
    if stem.startswith(("x_", "X_")):
        candidates.append(x_path.with_name("y_" + stem[2:] + ".npy"))
    if stem == "inputs":
        candidates.append(x_path.with_name("labels.npy"))
    candidates.append(x_path.with_name(stem + "_labels.npy"))
    for cand in dict.fromkeys(candidates):
        if cand.exists() and cand != x_path:
            return cand
    tried = ", ".join(c.name for c in dict.fromkeys(candidates))
    raise DataError(
        f"no label file found next to '{x_path}' (tried {tried}); "
        "name both explicitly as 'inputs.npy:labels.npy'"
    )


def _load_npy_pair(x_path: Path, y_path: Path, spec: InputSpec | None) -> Dataset:
    x = _load_npy(x_path)
    y = _load_npy(y_path)
    return _build(x, y, None, spec, x_path.name)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"array file '{path}' does not exist")
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except ValueError as exc:
        raise DataError(
            f"'{path.name}' cannot be read without pickle or is not a .npy file "
            f"({first_line(exc)}); save plain numeric arrays"
        ) from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"'{path.name}' is not a readable .npy file: {first_line(exc)}") from exc


# -- CSV --------------------------------------------------------------------------------------
def _load_csv(path: Path, spec: InputSpec | None, label_column: str) -> Dataset:
    """Read with numpy's C parser; on any problem re-read with the csv module, which
    names the line and column of the first bad cell."""
    header = _csv_header(path, label_column)
    label_idx = header.index(label_column)
    table = _fast_csv(path, len(header), label_idx)
    if table is None:
        table = _slow_csv(path, header, label_idx, label_column)
    labels = table[:, label_idx].astype(np.int64)
    x = np.delete(table, label_idx, axis=1).astype(np.float32)
    if spec is not None and len(spec.shape) > 1 and spec.numel == x.shape[1]:
        x = x.reshape(len(x), *spec.shape)  # CSV rows are flattened inputs
    return _build(x, labels, None, spec, path.name)


def _csv_header(path: Path, label_column: str) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path.name}' is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise DataError(f"'{path.name}' is not valid CSV: {exc}") from exc
    if header is None:
        raise DataError(f"'{path.name}' is empty; expected a header row")
    header = [h.strip() for h in header]
    if label_column not in header:
        raise DataError(
            f"'{path.name}' has no label column '{label_column}'; columns are "
            f"{', '.join(header[:20])}{' ...' if len(header) > 20 else ''}"
        )
    if len(header) < 2:
        raise DataError(f"'{path.name}' has no feature columns besides '{label_column}'")
    return header


def _fast_csv(path: Path, columns: int, label_idx: int) -> np.ndarray | None:
    """The whole table as float64, or ``None`` if anything needs the careful parser."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data"
            table = np.loadtxt(
                path,
                delimiter=",",
                skiprows=1,
                dtype=np.float64,
                ndmin=2,
                comments=None,
                quotechar='"',
                encoding="utf-8-sig",
            )
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    if table.shape[0] == 0 or table.shape[1] != columns or not np.isfinite(table).all():
        return None
    labels = table[:, label_idx]
    if not (np.all(labels == np.round(labels)) and np.all(np.abs(labels) < 2**53)):
        return None
    return table


def _slow_csv(path: Path, header: list[str], label_idx: int, label_column: str) -> np.ndarray:
    rows: list[list[float]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"'{path.name}' line {line_no} has {len(row)} cells; the header has "
                        f"{len(header)}"
                    )
                rows.append(
                    [
                        float(_int_cell(cell, path, line_no, label_column))
                        if i == label_idx
                        else _float_cell(cell, path, line_no, header[i])
                        for i, cell in enumerate(row)
                    ]
                )
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path.name}' is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise DataError(f"'{path.name}' is not valid CSV: {exc}") from exc
    if not rows:
        raise DataError(f"'{path.name}' has a header but no data rows")
    return np.asarray(rows, dtype=np.float64)


def _float_cell(cell: str, path: Path, line_no: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"'{path.name}' line {line_no}, column '{column}': {cell.strip()[:40]!r} is not a "
            "number"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"'{path.name}' line {line_no}, column '{column}': value is {cell.strip()}")
    return value


def _int_cell(cell: str, path: Path, line_no: int, column: str) -> int:
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)  # "3.0" as written by tools that store labels as floats
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    except ValueError:
        pass
    raise DataError(
        f"'{path.name}' line {line_no}, label column '{column}': {text[:40]!r} is not "
        "an integer class index"
    )


# -- image folders -------------------------------------------------------------------------------
def _load_image_folder(root: Path, spec: InputSpec | None) -> Dataset:
    """``root/<class name>/<image>``; classes sorted by name unless the spec names them."""
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"'{root}' has no class sub-folders; expected '{root.name}/<class name>/<image files>'"
        )
    folder_names = [p.name for p in class_dirs]
    if spec is not None:
        unknown = [n for n in folder_names if n not in spec.class_names]
        if unknown:
            raise DataError(
                f"'{root}' has class folder(s) {', '.join(unknown[:10])} that are not classes of "
                f"the model ({', '.join(spec.class_names[:20])})"
            )
        class_names = spec.class_names
        if len(spec.shape) != 3 or spec.shape[0] not in (1, 3):
            raise DataError(
                f"image folders need a spec of shape (1 or 3, H, W); the model expects {spec.shape}"
            )
        channels, height, width = spec.shape
    else:
        class_names = tuple(folder_names)
        channels = height = width = 0  # fixed by the first image
    images: list[np.ndarray] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        label = class_names.index(class_dir.name)
        for file in sorted(class_dir.iterdir()):
            if not file.is_file() or file.name.startswith("."):
                continue
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    if not channels:
                        channels = 1 if img.mode in ("1", "L", "I", "I;16", "F") else 3
                        width, height = img.size
                    # Check the header's size before decoding: no decompression bombs.
                    if img.size != (width, height):
                        raise DataError(
                            f"image '{file}' is {img.size[0]}x{img.size[1]} (WxH); expected "
                            f"{width}x{height} (resize the images; mlwarden never resizes "
                            "silently)"
                        )
                    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
            except (UnidentifiedImageError, DecompressionBombError, OSError, ValueError) as exc:
                raise DataError(f"cannot read image '{file}': {first_line(exc)}") from exc
            arr = arr.reshape(height, width, channels).transpose(2, 0, 1)
            images.append(arr.astype(np.float32) / 255.0)
            labels.append(label)
    if not images:
        raise DataError(
            f"'{root}' has no image files ({', '.join(IMAGE_SUFFIXES)}) in its class folders"
        )
    x = np.stack(images)
    return _build(x, np.asarray(labels, dtype=np.int64), class_names, spec, root.name)


# -- validation -----------------------------------------------------------------------------------
def _build(
    x: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str] | None,
    spec: InputSpec | None,
    name: str,
) -> Dataset:
    what = f"'{name}'"
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise DataError(f"{what}: inputs must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{what}: inputs must be (N, ...) with a batch axis, got shape {x.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot? store class indices, e.g. y.argmax(1))" if y.ndim == 2 else ""
        raise DataError(f"{what}: labels must be 1-D class indices, got shape {y.shape}{hint}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{what}: labels must be integer class indices, got dtype {y.dtype}")
    if len(x) != len(y):
        raise DataError(f"{what}: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{what} holds no samples")
    if y.min() < 0:
        raise DataError(f"{what}: labels must be non-negative, got {int(y.min())}")
    if class_names is None:
        class_names = (
            spec.class_names
            if spec is not None
            else tuple(str(i) for i in range(max(int(y.max()) + 1, 2)))
        )
    raw_uint8 = x.dtype == np.uint8
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    data = Dataset(xt, yt, tuple(class_names), name)
    return validate_dataset(data, spec, what=what, raw_uint8=raw_uint8)


def validate_dataset(
    data: Dataset, spec: InputSpec | None, *, what: str = "data", raw_uint8: bool = False
) -> Dataset:
    """Check ``data`` against ``spec`` (shape, finiteness, bounds, labels, class names).

    Without a spec only finiteness and label sanity are checked.
    """
    finite = torch.isfinite(data.x)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).sum())
        first = int((~finite).flatten(1).any(1).nonzero()[0])
        raise DataError(
            f"{what} contains NaN or infinite values in {bad} sample(s) (first: index {first})"
        )
    if int(data.y.max()) >= len(data.class_names):
        raise DataError(
            f"{what}: label {int(data.y.max())} has no class name ({len(data.class_names)} known)"
        )
    if spec is None:
        return data
    if tuple(data.x.shape[1:]) != spec.shape:
        hint = ""
        if math.prod(data.x.shape[1:]) == spec.numel:
            hint = " (same number of values: reshape the arrays to the model's shape)"
        raise DataError(
            f"{what} has inputs of shape {tuple(data.x.shape[1:])} per sample; the model "
            f"expects {spec.shape}{hint}"
        )
    if tuple(data.class_names) != tuple(spec.class_names):
        raise DataError(
            f"{what} has classes ({', '.join(data.class_names[:20])}) but the model has "
            f"({', '.join(spec.class_names[:20])})"
        )
    try:
        spec.validate_batch(data.x, what=what)
    except DataError as exc:
        if raw_uint8 and spec.bounds[1] <= 1.0:
            raise DataError(exc.message, hint="uint8 images? divide them by 255") from exc
        raise
    spec.validate_labels(data.y, what=f"{what} labels")
    return data



__all__ = ["IMAGE_SUFFIXES", "load_data", "validate_dataset"]
