"""HTML: one self-contained, escaped page whose figures are real embedded PNGs."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from mlwarden.core.findings import Artefact, Figure, Finding, ImageData, Report, Series
from mlwarden.report import render
from mlwarden.report.plots import MAX_IMAGES, figure_png

_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


@pytest.fixture(scope="module")
def sample_html(module_sample_report) -> str:
    return render(module_sample_report, "html")


def _pngs(html: str) -> dict[str, Image.Image]:
    out = {}
    for data, alt in _IMG.findall(html):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        out[alt] = Image.open(io.BytesIO(raw))
    return out


def test_page_is_self_contained(sample_html: str) -> None:
    assert sample_html.startswith("<!DOCTYPE html>")
    for attr in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', sample_html, re.IGNORECASE):
        assert not re.match(r"\s*(https?:|//|javascript:)", attr, re.IGNORECASE), attr
    assert not re.search(r"<(script|link|iframe|object|embed)\b", sample_html, re.IGNORECASE)
    assert "url(" not in sample_html, "no CSS that could load anything"
    assert "default-src 'none'" in sample_html  # CSP: nothing loads, nothing runs


def test_every_figure_is_an_embedded_png(sample_html, sample_report) -> None:
    pngs = _pngs(sample_html)
    assert set(pngs) == {f.title for f in sample_report.figures}
    for title, image in pngs.items():
        assert image.width >= 400 and image.height >= 150, title
    assert "This figure could not be drawn" not in sample_html


def test_header_verdict_cards_checks_and_findings(sample_html, sample_report) -> None:
    html = sample_html
    assert "<title>Audit of digits-cnn (teacher)</title>" in html
    for value in ("models/teacher.pt2", "data/digits_test.npz", "2026-11-22T20:30:00+00:00"):
        assert value in html
    assert 'class="verdict v-critical"' in html
    # the verdict leads the banner, in the words every format uses (mlwarden.core.verdict)
    assert '<span class="label outcome failed">FAILED</span>' in html
    assert (
        "FAILED — 3 of 6 checks failed at --fail-on high; 1 of 6 could not run; 1 skipped; "
        "6 findings, worst critical · 1 passed, 3 failed, 1 error, 1 skipped"
    ) in html
    assert '<div class="k">Clean accuracy</div><div class="v">97.3%</div>' in html
    for status in ("passed", "failed", "error", "skipped"):
        assert f'<span class="status s-{status}">{status}</span>' in html
    # findings grouped worst first; critical and high open, others collapsed
    positions = [
        html.index(f'<details class="finding {s}"')
        for s in ("critical", "high", "medium", "low", "info")
    ]
    assert positions == sorted(positions)
    assert re.search(r'<details class="finding critical" id="finding-\d+" open>', html)
    assert re.search(r'<details class="finding medium" id="finding-\d+">', html)
    assert '<span class="tag">AML.T0010</span>' in html
    assert '<span class="tag owasp">ML06</span>' in html
    assert "&#34;global&#34;: &#34;posix.system&#34;" in html  # evidence, escaped JSON
    assert '<td class="num">0.985</td>' in html  # per-class table, numbers right-aligned
    assert '<a href="artefacts/pgd_eps0.1.npz">' in html


def test_script_in_a_finding_is_escaped_and_links_are_sanitised() -> None:
    report = Report(
        title="</title><script>alert(1)</script>",
        subject={"model": '"><script>alert(2)</script>'},
        findings=[
            Finding(
                id="X-1",
                title="<script>alert('x')</script>",
                severity="high",
                detail="<b>bold</b>",
                evidence={"k": "<script>"},
            )
        ],
        artefacts=[
            Artefact(name="a", path="javascript:alert(1)"),
            Artefact(name="b", path="//evil.example/x"),
            Artefact(name="c", path="out/ok file.npz"),
        ],
        metrics={"<i>m</i>": "<script>"},
    )
    html = render(report, "html")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert not [h for h in hrefs if "javascript" in h or "evil.example" in h], hrefs
    assert '<a href="out/ok%20file.npz">' in html


def test_images_are_upscaled_with_nearest_neighbour() -> None:
    """A 2x2 checkerboard drawn big must stay two-tone: no interpolated greys."""
    fig = Figure(
        id="cb",
        title="t",
        kind="images",
        images=[ImageData(label="", pixels=[[0.0, 1.0], [1.0, 0.0]])],
    )
    img = np.asarray(Image.open(io.BytesIO(figure_png(fig))).convert("L"), dtype=np.int32)
    dark = img < 20
    rows, cols = np.nonzero(dark)
    assert rows.size > 100, "the image is drawn large enough to see"
    box = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # inside the drawn image every pixel is (near) black or white
    mid = (box > 20) & (box < 235)
    assert mid.mean() < 0.02


def test_colour_and_channel_first_images_and_limits() -> None:
    rgb_chw = np.zeros((3, 4, 4))
    rgb_chw[0] = 1.0  # pure red, stored channel-first as torch does
    many = [ImageData(label=str(i), pixels=[[i / 100]]) for i in range(MAX_IMAGES + 5)]
    report = Report(
        figures=[
            Figure(
                id="rgb",
                title="rgb",
                kind="images",
                images=[ImageData(label="red", pixels=rgb_chw.tolist())],
            ),
            Figure(id="many", title="many", kind="images", images=many),
        ]
    )
    html = render(report, "html")
    pngs = _pngs(html)
    red = np.asarray(pngs["rgb"].convert("RGB"))
    assert ((red[..., 0] > 200) & (red[..., 1] < 60) & (red[..., 2] < 60)).sum() > 100
    assert f"Showing the first {MAX_IMAGES} of {MAX_IMAGES + 5} images." in html


def test_a_broken_figure_does_not_lose_the_report() -> None:
    report = Report(
        findings=[Finding(id="A", title="still here", severity="low")],
        figures=[
            Figure(
                id="bad-line",
                title="mismatch",
                kind="line",
                series=[Series(label="s", x=[0, 1, 2], y=[1, 2])],
            ),
            Figure(
                id="bad-img",
                title="ragged",
                kind="images",
                images=[ImageData(label="r", pixels=[[0, 1], [1]])],
            ),
            Figure(
                id="ok", title="fine", kind="bar", series=[Series(label="s", x=[0, 1], y=[1, 2])]
            ),
        ],
    )
    html = render(report, "html")
    assert "still here" in html
    assert "figure &#39;bad-line&#39;, series &#39;s&#39;: x has 3 values, y has 2" in html
    assert "image &#39;r&#39; is not a rectangular array of numbers" in html
    assert set(_pngs(html)) == {"fine"}


def test_rendering_is_deterministic(sample_report, sample_html) -> None:
    assert render(sample_report, "html") == sample_html


def test_empty_report_renders() -> None:
    html = render(Report(), "html")
    assert 'class="verdict v-none"' in html and "No findings." in html
