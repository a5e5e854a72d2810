"""The GUI's metric captions show unit and direction, and their tooltips say what each number
measures (the lines of core.metrics.METRICS)."""

from __future__ import annotations

import html

import numpy as np
import pytest

from sdesr_gui.core.metrics import METRICS
from sdesr_gui.core.session import ResultItem, uncertainty_item
from sdesr_gui.gui.compare_view import CompareView, metrics_text
from sdesr_gui.gui.controls import describe_model, model_tooltip


def _items():
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # noqa: E731
    samples = [ResultItem(f"s{i}", f"Sample {i}", img(), "sample", seed=i, generated=True,
                          metrics={"consistency": 2.314, "psnr": 24.104, "ssim": 0.7123, "cs": 0.61})
               for i in (1, 2)]
    bic = ResultItem("bicubic", "Bicubic", img(), "bicubic", metrics={"consistency": 31.4, "psnr": 21.6,
                                                                      "ssim": 0.56})
    return [bic, uncertainty_item(samples), *samples]


@pytest.fixture
def view(qtbot):
    cv = CompareView()
    qtbot.addWidget(cv)
    cv.resize(1400, 900)
    cv.show()
    cv.set_items(_items())
    return cv


def test_captions_show_unit_and_direction_and_tooltips_explain(view):
    view.set_zoom(3)
    text = view.tiles["s1"].metrics.text()
    assert text.splitlines() == ["consistency 2.31 (0–255)² ↓", "PSNR 24.10 dB ↑", "SSIM 0.712 ↑",
                                 "CS 0.610 ↑"]
    assert "consistency 31.40 (0–255)² ↓" in view.tiles["bicubic"].metrics.text()  # bigger is worse, and says so
    tip = view.tiles["s1"].metrics.toolTip()
    for key in ("consistency", "psnr", "ssim", "cs"):
        assert html.escape(METRICS[key].line) in tip, key
    assert "Lower is better" in tip and "Higher is better" in tip
    assert "CS" not in view.tiles["bicubic"].metrics.toolTip()  # only the numbers shown are explained


def test_narrow_tiles_move_the_unit_to_its_own_line(view):
    t = view.tiles["s1"]
    t.set_grid_width(150)  # a narrow cell: the long line breaks before its unit
    assert t.metrics.text().splitlines()[:3] == ["consistency 2.31 ↓", "  (0–255)²", "PSNR 24.10 dB ↑"]
    assert "consistency 2.31 (0–255)² ↓" in t.metrics.toolTip()
    t.set_grid_width(400)  # wide again: one line each
    assert t.metrics.text().splitlines()[0] == "consistency 2.31 (0–255)² ↓"
    view.set_zoom(1)  # the view sets the cell width of every tile when it lays them out
    assert t._grid_width is not None and t._grid_width >= 128 + 40
    assert all(ln.endswith(("↑", "↓", "²")) for ln in t.metrics.text().splitlines())


def test_metrics_text_moves_only_the_unit_that_does_not_fit():
    m = {"consistency": 2.314, "psnr": 24.104, "ssim": 0.7}
    assert metrics_text(m, lambda line: len(line) <= 18) == \
        "consistency 2.31 ↓\n  (0–255)²\nPSNR 24.10 dB ↑\nSSIM 0.700 ↑"
    assert metrics_text(m) == "consistency 2.31 (0–255)² ↓\nPSNR 24.10 dB ↑\nSSIM 0.700 ↑"


def test_uncertainty_tile_numbers_carry_units_and_direction(view):
    tile = view.tiles["uncertainty"]
    assert "[0, 1] units" in tile.metrics.text() and "↓" in tile.metrics.text()
    tip = tile.toolTip()
    assert "mean std ↓" in tip and html.escape(METRICS["mean_std"].line) in tip


def test_model_line_says_unit_direction_and_what_val_psnr_is():
    meta = {"name": "m", "metrics": {"psnr": 21.147, "psnr_bicubic": 21.769}}
    assert "val PSNR 21.15 dB ↑ (bicubic 21.77 dB)" in describe_model(meta, "m")
    assert "bicubic –" in describe_model({"metrics": {"psnr": 21.0}}, "m")
    # warm-started weights: the total steps and the stages, oldest first
    staged = {"training": {"steps": 3000, "init": {"file": "a.safetensors", "training": {"steps": 4062}}}}
    assert "7062 steps (4062 + 3000)" in describe_model(staged, "m")
    assert "3000 steps" in describe_model({"training": {"steps": 3000, "init": {"file": "x"}}}, "m")
    tip = model_tooltip(meta, "/w/m.safetensors")
    assert "/w/m.safetensors" in tip and "validation faces" in tip and "Higher is better" in tip
    assert model_tooltip({}, "/w/m.safetensors") == "/w/m.safetensors"


@pytest.mark.parametrize("size,zoom", [((1400, 900), 3), ((470, 430), 1), ((470, 430), 0)])
def test_tiles_get_the_height_they_need_and_the_view_scrolls(qtbot, size, zoom):
    """No tile is squeezed under its image and captions (the uncertainty tile's wrapped caption
    included): when the tiles need more height than the view has, the view scrolls."""
    cv = CompareView()
    qtbot.addWidget(cv)
    cv.resize(*size)
    cv.show()
    cv.set_items(_items())
    cv.set_zoom(zoom)

    def settled():  # the re-layout is posted: wait for it (under load 50 ms was not always enough)
        return all(t.image.height() >= t.image.pixmap().height()
                   and t.metrics.height() >= t.metrics.heightForWidth(t.metrics.width())
                   for t in cv.tiles.values()) and cv.scroll.verticalScrollBar().maximum() > 0

    try:
        qtbot.waitUntil(settled, timeout=5000)
    except qtbot.TimeoutError:
        pass  # the assertions below say which tile is short
    for key, t in cv.tiles.items():
        assert t.image.height() >= t.image.pixmap().height(), key
        assert t.metrics.height() >= t.metrics.heightForWidth(t.metrics.width()), key
    assert cv.scroll.verticalScrollBar().maximum() > 0  # four tall tiles do not fit in either size


def test_a_sample_that_does_not_match_its_input_is_badged_and_explained(qtbot):
    """The tile of a sample with a warning (core.session.mismatch_warning) shows the badge and
    says why on hover; the other tiles show none."""
    items = _items()
    items[-1].warning = "does not match the input: downsampled to the LR size it is 34.8 grey levels off"
    cv = CompareView()
    qtbot.addWidget(cv)
    cv.show()
    cv.set_items(items)
    bad, good = cv.tiles["s2"], cv.tiles["s1"]
    assert "DOES NOT MATCH INPUT" in bad.title.text() and "GENERATED" in bad.title.text()
    assert bad.title.toolTip().startswith("Sample 2 does not match the input") and "34.8" in bad.title.toolTip()
    assert "DOES NOT MATCH" not in good.title.text() and good.title.toolTip() == ""
    assert "DOES NOT MATCH" not in cv.tiles["bicubic"].title.text()
