"""`load_data`: every format round-trips the digits, and every bad input is named."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlwarden.core import DataError, InputSpec
from mlwarden.io import load_data
from mlwarden.io.dataset import Dataset


@pytest.fixture(scope="module")
def small(digits: Dataset) -> Dataset:
    return digits.take(60)


def _arrays(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    return data.x.numpy(), data.y.numpy()


def _assert_same(got: Dataset, want: Dataset) -> None:
    assert got.x.dtype == torch.float32 and got.y.dtype == torch.long
    torch.testing.assert_close(got.x, want.x)
    assert torch.equal(got.y, want.y)
    assert got.class_names == want.class_names


def test_builtin_names(digits_spec: InputSpec) -> None:
    data = load_data("digits", spec=digits_spec)
    assert data.x.shape == (1797, 1, 8, 8)
    cancer = load_data("breast_cancer")
    assert cancer.x.shape == (569, 30) and cancer.class_names == ("malignant", "benign")
    with pytest.raises(DataError, match="'digits' .* expects \\(30,\\)|expects \\(30,\\)"):
        load_data("digits", spec=InputSpec.for_classes((30,), 2))


def test_npz_round_trip_and_missing_keys(
    small: Dataset, digits_spec: InputSpec, tmp_path: Path
) -> None:
    x, y = _arrays(small)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(small.class_names))
    _assert_same(load_data(path, spec=digits_spec), small)
    np.savez(tmp_path / "bad.npz", inputs=x, labels=y)
    with pytest.raises(DataError, match="lacks key\\(s\\) x, y; it holds inputs, labels"):
        load_data(tmp_path / "bad.npz")


def test_npz_with_objects_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="cannot be read without pickle"):
        load_data(path)


def test_npy_pairs(small: Dataset, digits_spec: InputSpec, tmp_path: Path) -> None:
    x, y = _arrays(small)
    np.save(tmp_path / "train_x.npy", x)
    np.save(tmp_path / "train_y.npy", y)
    _assert_same(load_data(tmp_path / "train_x.npy", spec=digits_spec), small)
    np.save(tmp_path / "inputs.npy", x)
    np.save(tmp_path / "targets.npy", y)
    explicit = f"{tmp_path / 'inputs.npy'}:{tmp_path / 'targets.npy'}"
    _assert_same(load_data(explicit, spec=digits_spec), small)
    with pytest.raises(DataError, match="no label file found next to .*tried labels.npy"):
        load_data(tmp_path / "inputs.npy")


def test_csv_with_label_column_reshaped_to_the_spec(
    small: Dataset, digits_spec: InputSpec, tmp_path: Path
) -> None:
    path = tmp_path / "d.csv"
    x, y = _arrays(small)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["digit", *[f"p{i}" for i in range(64)]])
        for row, label in zip(x.reshape(len(x), -1), y, strict=True):
            writer.writerow([int(label), *[repr(float(v)) for v in row]])
    _assert_same(load_data(path, spec=digits_spec, label_column="digit"), small)
    flat = load_data(path, label_column="digit")
    assert flat.x.shape == (60, 64)
    with pytest.raises(DataError, match="no label column 'label'; columns are digit, p0"):
        load_data(path)


def test_csv_bad_cells_are_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b,label\n0.1,0.2,0\n0.3,oops,1\n")
    with pytest.raises(DataError, match="line 3, column 'b': 'oops' is not a number"):
        load_data(path)
    path.write_text("a,b,label\n0.1,0.2,cat\n")
    with pytest.raises(DataError, match="line 2, label column 'label': 'cat' is not an integer"):
        load_data(path)
    path.write_text("a,b,label\n0.1,0.2,1\n0.1,0.2,2.5\n")
    with pytest.raises(DataError, match="line 3, label column 'label': '2.5' is not an integer"):
        load_data(path)
    path.write_text('a,"b",label\n0.1,"0.2",1.0\n\n0.3,0.4,0\n')  # quotes, blank line, 1.0
    ok = load_data(path)
    assert ok.y.tolist() == [1, 0]
    torch.testing.assert_close(ok.x, torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
    path.write_text("a,b,label\n0.1,nan,0\n")
    with pytest.raises(DataError, match="line 2, column 'b': value is nan"):
        load_data(path)
    path.write_text("a,b,label\n0.1,0.2\n")
    with pytest.raises(DataError, match="line 2 has 2 cells; the header has 3"):
        load_data(path)
    path.write_text("a,b,label\n")
    with pytest.raises(DataError, match="no data rows"):
        load_data(path)


def _write_images(root: Path, data: Dataset, mode: str = "L") -> None:
    for i, (img, label) in enumerate(zip(data.x, data.y, strict=True)):
        folder = root / data.class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, "L").convert(mode).save(folder / f"{i:03d}.png")


def test_image_folder_matches_the_arrays(
    small: Dataset, digits_spec: InputSpec, tmp_path: Path
) -> None:
    root = tmp_path / "images"
    _write_images(root, small)
    (root / "3" / "README.txt").write_text("not an image")  # ignored
    data = load_data(root, spec=digits_spec)
    quantised = torch.round(small.x * 255) / 255
    # files are listed per class folder, so compare sample sets class by class
    for label in range(10):
        want = quantised[small.y == label]
        got = data.x[data.y == label]
        assert got.shape == want.shape
        torch.testing.assert_close(got.sum(0), want.sum(0), atol=1e-4, rtol=1e-5)
    assert data.class_names == digits_spec.class_names


def test_image_folder_checks_size_channels_and_classes(
    small: Dataset, digits_spec: InputSpec, tmp_path: Path
) -> None:
    root = tmp_path / "rgb"
    _write_images(root, small.take(12), mode="RGB")
    rgb_spec = InputSpec.for_classes((3, 8, 8), 10)
    data = load_data(root, spec=rgb_spec)
    assert data.x.shape == (12, 3, 8, 8)
    torch.testing.assert_close(data.x[:, 0], data.x[:, 2])  # grey saved as RGB
    Image.new("L", (9, 8)).save(root / "0" / "big.png")
    with pytest.raises(DataError, match=r"big.png' is 9x8 \(WxH\); expected 8x8"):
        load_data(root, spec=rgb_spec)
    (root / "0" / "big.png").unlink()
    (root / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_data(root, spec=rgb_spec)
    (root / "0" / "broken.png").unlink()
    (root / "zebra").mkdir()
    with pytest.raises(DataError, match="class folder\\(s\\) zebra that are not classes"):
        load_data(root, spec=digits_spec)


def test_validation_against_the_spec(
    small: Dataset, digits_spec: InputSpec, tmp_path: Path
) -> None:
    x, y = _arrays(small)
    cases = {
        "shape": (
            x.reshape(60, 64),
            y,
            r"inputs of shape \(64,\) per sample; the model expects "
            r"\(1, 8, 8\) \(same number of values",
        ),
        "nan": (
            np.where(np.arange(60)[:, None, None, None] == 7, np.nan, x),
            y,
            r"NaN or infinite values in 1 sample\(s\) \(first: index 7\)",
        ),
        "bounds": (x * 3, y, r"outside the input bounds \[0, 1\]"),
        "uint8": ((x * 255).astype(np.uint8), y, r"divide them by 255"),
        "label range": (x, np.where(y == 0, 12, y), r"label 12 has no class name"),
        "negative": (x, y - 1, r"labels must be non-negative"),
        "float labels": (x, y.astype(np.float32), r"labels must be integer class indices"),
        "one-hot": (x, np.eye(10, dtype=np.int64)[y], r"one-hot\? store class indices"),
        "length": (x, y[:50], r"60 inputs but 50 labels"),
    }
    for name, (xs, ys, pattern) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=xs, y=ys)
        with pytest.raises(DataError, match=pattern):
            load_data(path, spec=digits_spec)
    np.savez(tmp_path / "names.npz", x=x, y=y, class_names=np.array([f"c{i}" for i in range(10)]))
    with pytest.raises(DataError, match=r"has classes \(c0, c1"):
        load_data(tmp_path / "names.npz", spec=digits_spec)


def test_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist .*built-in sets digits, breast_cancer"):
        load_data("mnist")
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unknown data format '.parquet'"):
        load_data(tmp_path / "d.parquet")
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(tmp_path / "cut.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class sub-folders"):
        load_data(tmp_path / "empty")
