"""Draw a report `Figure` (data, not pixels) as a PNG with matplotlib's Agg backend.

Uses ``matplotlib.figure.Figure`` directly, never ``pyplot``: no global figure
registry, no GUI backend selection, safe inside a server. PNGs are written without
the ``Software`` metadata so that the same report renders to the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from mlwarden.core.errors import DataError
from mlwarden.core.findings import Figure, ImageData
from mlwarden.report.formatting import format_number, truncate

#: Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F", "#000000"]
REFERENCE_LABELS = ("chance", "random", "baseline", "diagonal")

#: At most this many images are drawn per figure; the caption says how many were left out.
MAX_IMAGES = 64
IMAGE_COLUMNS = 8
#: Each image is drawn in a square cell of at least this many pixels (at most the max).
CELL_PIXELS = 96
MAX_CELL_PIXELS = 256
DPI = 120

_RC = {
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "axes.edgecolor": "#9aa3af",
    "axes.labelcolor": "#1f2937",
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "savefig.facecolor": "white",
}


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _unit_range(values: list[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) >= 0.0 and max(finite) <= 1.0


def _check_series(figure: Figure) -> None:
    if not figure.series:
        raise DataError(f"figure '{figure.id}' has no series to plot")
    for s in figure.series:
        if len(s.x) != len(s.y):
            raise DataError(
                f"figure '{figure.id}', series '{s.label}': "
                f"x has {len(s.x)} values, y has {len(s.y)}"
            )


def _legend(ax: Any, figure: Figure) -> None:
    """A legend above the axes, so that it never hides data."""
    labels = [s.label for s in figure.series if s.label]
    if labels:
        ax.legend(
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncols=min(len(labels), 3),
            borderaxespad=0.2,
            handlelength=1.8,
        )


def _line(figure: Figure) -> Any:
    from matplotlib.figure import Figure as MplFigure

    _check_series(figure)
    fig = MplFigure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    colour = 0
    for s in figure.series:
        if s.label.strip().lower().startswith(REFERENCE_LABELS):
            ax.plot(s.x, s.y, linestyle="--", color="#9ca3af", linewidth=1.2, label=s.label)
            continue
        few = len(s.x) <= 12
        ax.plot(
            s.x,
            s.y,
            color=PALETTE[colour % len(PALETTE)],
            linewidth=2.0,
            marker="o" if few else None,
            markersize=4,
            label=s.label,
        )
        colour += 1
    ys = [v for s in figure.series for v in s.y]
    if figure.log_x:
        ax.set_xscale("log")
    if figure.log_y:
        ax.set_yscale("log")
    elif _unit_range(ys):
        ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.35, linewidth=0.6)
    ax.set_xlabel(figure.x_label)
    ax.set_ylabel(figure.y_label)
    _legend(ax, figure)
    return fig


def _bar(figure: Figure) -> Any:
    from matplotlib.figure import Figure as MplFigure

    _check_series(figure)
    categories: list[float] = []
    for s in figure.series:
        for x in s.x:
            if x not in categories:
                categories.append(x)
    position = {x: i for i, x in enumerate(categories)}
    n = len(figure.series)
    width = 0.8 / n
    fig = MplFigure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for k, s in enumerate(figure.series):
        xs = [position[x] - 0.4 + width * (k + 0.5) for x in s.x]
        ax.bar(xs, s.y, width=width * 0.92, color=PALETTE[k % len(PALETTE)], label=s.label)
    ax.set_xticks(range(len(categories)))
    names = [
        figure.categories[int(x)]
        if x == int(x) and 0 <= int(x) < len(figure.categories)
        else format_number(x)
        for x in categories
    ]
    ax.set_xticklabels(names, rotation=60 if len(categories) > 16 else 0)
    if _unit_range([v for s in figure.series for v in s.y]):
        ax.set_ylim(0, 1.03)
    ax.grid(True, axis="y", alpha=0.35, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel(figure.x_label)
    ax.set_ylabel(figure.y_label)
    _legend(ax, figure)
    return fig


def image_array(image: ImageData) -> tuple[np.ndarray, bool]:
    """``(array, is_colour)``: H x W grey or H x W x 3/4 colour scaled to [0, 1].

    Also accepts channel-first (C x H x W, C in {1, 3}) images, the torch layout.
    """
    try:
        arr = np.asarray(image.pixels, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError(f"image '{image.label}' is not a rectangular array of numbers") from exc
    # The contract is H x W x C, but torch code stores C x H x W; a leading 1 or 3 with a
    # trailing size that is not a channel count can only mean channel-first.
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise DataError(f"image '{image.label}' has shape {arr.shape}; expected H x W or H x W x 3")
    span = image.vmax - image.vmin
    if not math.isfinite(span) or span <= 0:
        raise DataError(f"image '{image.label}': vmax must be greater than vmin")
    arr = np.clip((arr - image.vmin) / span, 0.0, 1.0)
    return np.nan_to_num(arr, nan=0.0), arr.ndim == 3


def _to_rgb(arr: np.ndarray, colour: bool) -> np.ndarray:
    if not colour:
        return np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:  # composite RGBA over white, as a browser would
        alpha = arr[..., 3:4]
        return arr[..., :3] * alpha + (1.0 - alpha)
    return arr


def _cell(arr: np.ndarray, size: int) -> np.ndarray:
    """``arr`` scaled by an integer factor with nearest neighbour, centred in a white
    ``size`` x ``size`` cell: an 8x8 trigger becomes 96x96 pixels with hard edges."""
    h, w = arr.shape[:2]
    if max(h, w) > size:  # too big: subsample by an integer stride
        stride = math.ceil(max(h, w) / size)
        arr = arr[::stride, ::stride]
    else:
        factor = max(1, size // max(h, w))
        arr = np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)
    h, w = arr.shape[:2]
    cell = np.ones((size, size, 3), dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    cell[top : top + h, left : left + w] = arr
    return cell


def _images(figure: Figure) -> Any:
    """A grid of small images as one mosaic drawn 1:1 (one Axes, not one per image:
    64 matplotlib Axes take seconds to lay out, one mosaic takes milliseconds)."""
    from matplotlib.figure import Figure as MplFigure

    if not figure.images:
        raise DataError(f"figure '{figure.id}' has no images")
    shown = figure.images[:MAX_IMAGES]
    arrays = [image_array(img) for img in shown]
    largest = max(max(a.shape[:2]) for a, _ in arrays)
    size = min(max(CELL_PIXELS, largest), MAX_CELL_PIXELS)
    cols = min(len(shown), IMAGE_COLUMNS)
    rows = math.ceil(len(shown) / cols)
    pad, label_h = 12, 20
    width = cols * (size + pad) + pad
    height = rows * (size + pad + label_h) + pad
    mosaic = np.ones((height, width, 3), dtype=np.float32)
    labels = []
    for idx, (arr, colour) in enumerate(arrays):
        r, c = divmod(idx, cols)
        x = pad + c * (size + pad)
        y = pad + r * (size + pad + label_h) + label_h
        mosaic[y : y + size, x : x + size] = _cell(_to_rgb(arr, colour), size)
        # a hairline frame so that white images stay visible on the white page
        mosaic[y - 1 : y + size + 1, [x - 1, x + size]] = 0.8
        mosaic[[y - 1, y + size], x - 1 : x + size + 1] = 0.8
        labels.append((x + size / 2, y - 5, truncate(shown[idx].label, 22)))
    fig = MplFigure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.imshow(mosaic, interpolation="nearest", aspect="equal", resample=False)
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=8, color="#1f2937")
    return fig


DRAWERS = {"line": _line, "bar": _bar, "images": _images}


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes; `DataError` names the figure if its data cannot be drawn."""
    from matplotlib import rc_context

    drawer = DRAWERS.get(figure.kind)
    if drawer is None:
        raise DataError(f"figure '{figure.id}' has unknown kind '{figure.kind}'")
    with rc_context(_RC):
        fig = drawer(figure)
        if figure.kind == "images":
            fig.patch.set_facecolor("white")
        return _png(fig)


def figure_data_uri(figure: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI to embed in HTML."""
    return "data:image/png;base64," + base64.b64encode(figure_png(figure)).decode("ascii")
