"""The main window end to end (offscreen): open footage, seek, pick faces, run, cancel, export.

Models are tiny random networks made here (a few ms per step), so sampling is fast and the
samples are noise: these tests check the plumbing, not the pictures.
"""

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402

from sdesr_gui.core.presets import DEFAULT_GUIDANCE_CAP  # noqa: E402
from sdesr_gui.core.provenance import sha256_file  # noqa: E402
from sdesr_gui.gui.main_window import MainWindow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_FACE = ROOT / "resources" / "sample_face.png"
RUN_TIMEOUT = 120_000  # ms; generous for a loaded 2-core machine, normally a second or two


@pytest.fixture(scope="module")
def fast_weights(tmp_path_factory):
    """A score model without attention (fast at 128x128) and a small attribute classifier."""
    import torch

    from sdesr_gui.core.models import (AttributeClassifier, AttributeClassifierConfig, ScoreNetConfig,
                                       ScoreUNet, save_checkpoint)
    from sdesr_gui.core.sde import VESDE

    d = tmp_path_factory.mktemp("gui_weights")
    torch.manual_seed(0)
    cfg = ScoreNetConfig(channels=(4, 4, 4, 4), blocks_per_level=1, attn_resolutions=(), emb_dim=8, attn_heads=1)
    score = d / "fast_score.safetensors"
    save_checkpoint(score, ScoreUNet(cfg), kind="score", config=cfg.to_dict(),
                    metadata={"sde": VESDE().to_dict(), "data_range": [0, 1], "scale_factor": 8,
                              "training_data": "none (random initialisation, tests only)"})
    ccfg = AttributeClassifierConfig(channels=(4, 4, 4, 4, 4), emb_dim=8)
    cls = d / "fast_classifier.safetensors"
    save_checkpoint(cls, AttributeClassifier(ccfg), kind="classifier", config=ccfg.to_dict(),
                    metadata={"sde": VESDE().to_dict(), "default_h": 50.0, "guidance_sigma_min": 0.25,
                              "training_data": "none (random initialisation, tests only)"})
    return {"score": score, "classifier": cls}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 6-frame 320x240 MJPG clip: the sample face moving right; frame 3 has no face."""
    import cv2

    from sdesr_gui.core.video import load_still

    face = cv2.resize(load_still(SAMPLE_FACE), (100, 100), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    assert w.isOpened()
    for i in range(6):
        frame = np.full((240, 320, 3), 90, np.uint8)
        if i != 3:
            x = 40 + 20 * i
            frame[70:170, x:x + 100] = face
        w.write(frame[:, :, ::-1].copy())
    w.release()
    return path


class TinyEmbedder:
    """Stands in for the face embedder (CS): a mean-removed, normalised 8x8 grey thumbnail."""

    name, dim = "tiny", 64

    def embed_aligned(self, images):
        out = []
        for img in images:
            g = np.asarray(img, dtype=np.float64).mean(axis=2)[::16, ::16].reshape(-1)
            g = g - g.mean()
            out.append(g / max(np.linalg.norm(g), 1e-9))
        return np.stack(out)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "no_weights"))  # nothing installed
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, gallery_cache_dir=tmp_path / "cache", gallery_embedder=TinyEmbedder())
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win
    win.shutdown()


def open_and_detect(qtbot, win, path):
    with qtbot.waitSignal(win.source_panel.detectionFinished, timeout=60_000):
        assert win.open_path(path)


def use_models(win, weights, classifier=True):
    assert win.controls.add_model_file(weights["score"], "score")
    if classifier:
        assert win.controls.add_model_file(weights["classifier"], "classifier")


def run_and_wait(qtbot, win, **kw):
    with qtbot.waitSignal(win.runFinished, timeout=RUN_TIMEOUT,
                          raising=True, check_params_cb=None):
        assert win.start_run(**kw), win.last_error


# ------------------------------------------------------------------------------------------
def test_open_still_selects_detected_face(qtbot, window):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    sp = window.source_panel
    assert sp.frame_count == 1 and sp.kind == "still"
    assert len(sp.faces) == 1 and sp.faces[0].prob > 0.9
    sel = sp.selection
    assert sel is not None and sel.kind == "detected"
    assert sel.crop.shape == (128, 128, 3) and sel.lr.shape == (16, 16, 3)
    assert sel.reference is not None  # the face had enough pixels
    keys = [it.key for it in window.compare.items]
    assert keys[:2] == ["lr", "bicubic"] and "reference" in keys
    assert not sp.scrubber.isVisible() or not sp.slider.isEnabled()
    # the whole 128x128 still can also be taken as the face frame
    sp.select_whole_image()
    assert sp.selection.kind == "frame" and np.array_equal(sp.selection.crop, sp.image)
    assert str(SAMPLE_FACE) in window._recent()


def test_a_transparent_still_goes_on_grey_and_the_panel_says_so(qtbot, window, tmp_path):
    from PIL import Image

    rgba = np.dstack([np.asarray(Image.open(SAMPLE_FACE).convert("RGB")), np.full((128, 128), 255, np.uint8)])
    rgba[:, :24, 3] = 0  # a transparent strip down the left
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    open_and_detect(qtbot, window, path)
    sp = window.source_panel
    assert np.all(sp.image[:, :24] == 128) and np.array_equal(sp.image[:, 24:], rgba[:, 24:, :3])
    note = ("'cutout.png' has transparent pixels; they were composited on a neutral mid-grey "
            "(128, 128, 128) before use.")
    assert sp.source_note.isVisible() and sp.source_note.text() == f"Note: {note}"
    assert window.session.source_info["notes"] == [note]  # goes into the run record with the input
    open_and_detect(qtbot, window, SAMPLE_FACE)  # an opaque file: no note
    assert not sp.source_note.isVisible() and "notes" not in window.session.source_info


def test_open_errors_are_one_sentence(qtbot, window, tmp_path):
    assert not window.open_path(tmp_path / "missing.png")
    assert "does not exist" in window.last_error and "\n" not in window.last_error
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with qtbot.waitSignal(window.source_panel.openFailed, timeout=30_000):
        assert window.open_path(bad)  # accepted: it is decoded in a worker, which finds it broken
    assert window.last_error.endswith(".") and "Traceback" not in window.last_error


def test_opening_a_video_returns_to_the_event_loop_before_decoding(qtbot, window, clip, monkeypatch):
    """The file is opened in a worker: open_path returns at once, the window keeps handling
    events (with an "opening" bar) while the video is still being decoded."""
    import threading

    from PySide6.QtCore import QTimer

    from sdesr_gui.core import video

    real, gate, seen = video.open_source, threading.Event(), {}

    def slow_open(path, *a, **kw):  # a long file: decoding waits until the test lets it go
        seen["thread"] = threading.current_thread()
        assert gate.wait(30)
        return real(path, *a, **kw)

    monkeypatch.setattr(video, "open_source", slow_open)
    sp = window.source_panel
    ticks = []
    QTimer.singleShot(0, lambda: ticks.append("event loop ran"))
    try:
        assert window.open_path(clip)
        assert sp.source is None and sp.is_busy and not sp.busy.isHidden()
        assert "Opening clip.avi" in sp.busy_label.text()
        qtbot.waitUntil(lambda: bool(ticks) and "thread" in seen, timeout=10_000)
        assert sp.source is None and not gate.is_set()  # the event loop ran while the file was not decoded yet
        assert seen["thread"] is not threading.main_thread()
        with qtbot.waitSignal(sp.detectionFinished, timeout=60_000):
            gate.set()
    finally:
        gate.set()
    assert sp.kind == "video" and sp.frame_count == 6 and not sp.is_busy and sp.busy.isHidden()


def test_only_the_last_requested_frame_is_shown(qtbot, window, clip, monkeypatch):
    import threading

    open_and_detect(qtbot, window, clip)
    sp = window.source_panel
    real, gate, reads = sp.source.frame, threading.Event(), []

    def slow_frame(i):  # seeking in a long video: each read waits for the test
        reads.append((i, threading.current_thread() is threading.main_thread()))
        assert gate.wait(30)
        return real(i)

    monkeypatch.setattr(sp.source, "frame", slow_frame)
    shown = []
    sp.frameChanged.connect(shown.append)
    try:
        for i in (1, 2, 3, 4):
            sp.set_frame(i)  # returns at once; 2 and 3 are superseded before they are read
        assert sp.frame_index == 0 and sp.is_busy
        qtbot.waitUntil(lambda: not sp.busy.isHidden(), timeout=10_000)  # a slow seek shows the busy bar
        assert "Decoding frame 1" in sp.busy_label.text()
    finally:
        gate.set()
    qtbot.waitUntil(lambda: sp.frame_index == 4 and not sp.is_busy, timeout=30_000)
    qtbot.wait(100)
    assert shown == [4] and sp.slider.value() == 4 and sp.busy.isHidden()
    assert [i for i, _ in reads] == [1, 4] and not any(on_gui for _, on_gui in reads)


def test_a_damaged_video_is_one_message_and_no_crash(qtbot, window, clip, tmp_path):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    sp = window.source_panel
    data = clip.read_bytes()
    for name, content in (("damaged.avi", data[:400]), ("noise.mp4", bytes(range(256)) * 64)):
        bad = tmp_path / name
        bad.write_bytes(content)
        window.last_error = None
        n_dialogs = len(window._dialogs)
        with qtbot.waitSignal(sp.openFailed, timeout=30_000) as blocker:
            assert window.open_path(bad)
        msg = blocker.args[0]
        assert window.last_error == msg and name in msg
        assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg and "unexpectedly" not in msg
        assert len(window._dialogs) == n_dialogs + 1  # one dialog
        assert not sp.is_busy and sp.busy.isHidden()
        assert sp.path == SAMPLE_FACE and sp.image is not None  # what was open stays open
    open_and_detect(qtbot, window, clip)  # and the window carries on
    assert sp.kind == "video"


def test_video_seek_step_play_and_faces(qtbot, window, clip):
    open_and_detect(qtbot, window, clip)
    sp = window.source_panel
    assert sp.frame_count == 6 and sp.kind == "video"
    assert sp.slider.maximum() == 5 and sp.slider.isEnabled()
    assert sp.selection is not None and sp.selection.frame_index == 0
    box0 = sp.selection.box

    with qtbot.waitSignal(sp.detectionFinished, timeout=60_000) as blocker:
        sp.spin.setValue(2)  # seek by frame number
    assert blocker.args == [2, 1]
    assert sp.slider.value() == 2 and sp.selection.frame_index == 2
    assert sp.selection.box[0] > box0[0] + 20  # the face moved right and was followed

    with qtbot.waitSignal(sp.detectionFinished, timeout=60_000) as blocker:
        window.act_next.trigger()  # step +1 (shortcut ".")
    assert sp.frame_index == 3 and blocker.args == [3, 0]
    assert sp.selection is None  # no face on this frame

    # a box drawn by hand where detection missed
    view = sp.view
    a = view.image_to_widget(QPointF(120, 70)).toPoint()
    b = view.image_to_widget(QPointF(220, 170)).toPoint()
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=a)
    for t in np.linspace(0, 1, 5):
        view.mouseMoveEvent(_move_event(a + (b - a) * float(t)))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=b)
    sel = sp.selection
    assert sel is not None and sel.kind == "manual"
    assert sel.crop.shape == (128, 128, 3) and sel.lr.shape == (16, 16, 3)
    assert abs(sel.box[0] - 120) < 3 and abs(sel.box[3] - 170) < 3

    with qtbot.waitSignal(sp.detectionFinished, timeout=60_000):
        window.act_prev.trigger()  # step -1
    assert sp.frame_index == 2 and sp.selection.kind == "detected"
    # clicking a detected box selects it
    f = sp.faces[0]
    centre = view.image_to_widget(QPointF((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2)).toPoint()
    sp.select_whole_image()  # (not available for a 320x240 frame: selection unchanged)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=centre)
    assert sp.selection.kind == "detected" and sp.view._selected == 0

    # two eye clicks align the face (tilt and scale from the eyes)
    detected_crop = sp.selection.crop.astype(int)
    sp.eyes_btn.setChecked(True)
    for x, y in f.landmarks[:2]:
        qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.image_to_widget(QPointF(x, y)).toPoint())
    assert not sp.eyes_btn.isChecked()
    assert sp.selection.kind == "eyes" and sp.selection.details["method"] == "eyes"
    assert np.abs(sp.selection.crop.astype(int) - detected_crop).mean() < 25

    # play runs to the end of the clip and stops
    sp.set_frame(0)
    sp.play()
    qtbot.waitUntil(lambda: sp.frame_index == 5 and not sp.play_timer.isActive(), timeout=20_000)
    assert not sp.play_btn.isChecked()


def _move_event(p: QPoint):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent

    return QMouseEvent(QEvent.Type.MouseMove, QPointF(p), QPointF(p), Qt.MouseButton.NoButton,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)


@pytest.fixture(scope="module")
def astronaut_on_grey(tmp_path_factory):
    """scikit-image's astronaut (a real face) on the left of a wide mid-grey canvas."""
    from PIL import Image
    from skimage import data

    canvas = np.full((520, 1000, 3), 128, np.uint8)
    canvas[:512, :512] = data.astronaut()
    path = tmp_path_factory.mktemp("astronaut") / "astronaut_on_grey.png"
    Image.fromarray(canvas).save(path)
    return path


def _draw_box(qtbot, view, x0, y0, x1, y1):
    a = view.image_to_widget(QPointF(x0, y0)).toPoint()
    b = view.image_to_widget(QPointF(x1, y1)).toPoint()
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=a)
    for t in np.linspace(0, 1, 5):
        view.mouseMoveEvent(_move_event(a + (b - a) * float(t)))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=b)


def test_a_drawn_box_without_a_face_is_no_reference_unless_the_analyst_insists(qtbot, window, astronaut_on_grey):
    from PySide6.QtWidgets import QMessageBox

    from sdesr_gui.core.selection import NO_FACE_KEPT_NOTE, NO_FACE_NOTE, NO_FACE_QUESTION

    open_and_detect(qtbot, window, astronaut_on_grey)
    sp = window.source_panel
    # a box on the grey part: big enough to be a genuine reference, but no face in it
    with qtbot.waitSignal(sp.boxFaceChecked, timeout=60_000) as blocker:
        _draw_box(qtbot, sp.view, 700, 150, 790, 260)
    assert blocker.args == [False]
    sel = sp.selection
    assert sel.kind == "manual" and sel.reference is None and sel.note == NO_FACE_NOTE
    assert sel.to_dict()["face_in_box"] is False and sel.to_dict()["reference_hr"] is False
    assert "reference" not in [it.key for it in window.compare.items]  # no metrics against it
    assert sp.note_label.text() == NO_FACE_NOTE
    assert window.last_question == NO_FACE_QUESTION
    box = window._dialogs[-1]
    assert isinstance(box, QMessageBox) and box.isVisible() and box.text() == NO_FACE_QUESTION
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
    box.button(QMessageBox.StandardButton.Yes).click()  # "use it anyway"
    sel = sp.selection
    assert sel.reference is not None and sel.note == NO_FACE_KEPT_NOTE and sel.to_dict()["face_in_box"] is False
    assert window.compare.item("reference") is not None

    # a box on the astronaut's face: a face is found, no question, the crop is the reference
    window.last_question = None
    with qtbot.waitSignal(sp.boxFaceChecked, timeout=60_000) as blocker:
        _draw_box(qtbot, sp.view, 181, 62, 268, 172)
    assert blocker.args == [True]
    sel = sp.selection
    assert sel.kind == "manual" and sel.reference is not None and "face_in_box" not in sel.to_dict()
    assert window.last_question is None and "No face" not in sp.note_label.text()
    assert window.compare.item("reference") is not None


def test_no_weights_gives_a_clear_message(qtbot, window):
    c = window.controls
    assert c.weights_path() is None
    assert not c.no_model_label.isHidden() and "No trained model is installed" in c.no_model_label.text()
    open_and_detect(qtbot, window, SAMPLE_FACE)
    assert not window.start_run()
    assert "No trained model is installed" in window.last_error


def test_run_shows_live_frames_and_samples_then_rerun(qtbot, window, fast_weights):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights)
    c = window.controls
    assert c.h_slider.value() == 50  # the classifier's model-card default_h
    assert c.g_sigma.value() == pytest.approx(0.25)  # ... and its guidance interval
    assert c.take_settings(draw_seed=False).guidance_sigma_min == pytest.approx(0.25)
    assert c.g_cap.value() == pytest.approx(DEFAULT_GUIDANCE_CAP) and c.g_cap.isEnabled()
    c.g_cap.setValue(0.4)
    assert c.take_settings(draw_seed=False).guidance_cap == pytest.approx(0.4)
    c.steps.setValue(5)
    c.samples.setValue(2)
    c.seed.setValue(7)
    c.attr_boxes["male"].set_value(1)
    run_and_wait(qtbot, window)
    assert window.preview_steps and window.preview_steps[-1] == 5  # the last step is always shown
    assert c.live_x.pixmap() is not None and not c.live_d.pixmap().isNull()
    samples = window.compare.samples()
    assert [s.seed for s in samples] == [7, 8]
    for s in samples:
        assert s.image.shape == (128, 128, 3) and s.generated
        assert {"consistency", "psnr", "ssim"} <= set(s.metrics)
    # the mean estimate: its own tile beside bicubic, never called a sample
    keys = [it.key for it in window.compare.items]
    assert keys[:3] == ["lr", "bicubic", "mean"] and keys[-2:] == ["s1", "s2"]
    mean = window.compare.item("mean")
    assert mean.kind == "mean" and mean.title == "Mean estimate" and mean.seed is None
    assert {"consistency", "psnr", "ssim"} <= set(mean.metrics)
    tile = window.compare.tiles["mean"]
    assert tile.fav is None and "ESTIMATE" in tile.title.text() and "GENERATED" in tile.title.text()
    assert "not a sample" in tile.toolTip() and "most accurate single image" in tile.toolTip()
    assert "blurrier" in tile.toolTip()
    assert window.run.settings["mean_estimate"]["sigma"] == 348.0
    assert window.run.settings["attributes"]["male"] == 1 and window.run.settings["h"] == 50.0
    assert window.run.settings["guidance_sigma_min"] == pytest.approx(0.25)
    assert window.run.settings["guidance_cap"] == pytest.approx(0.4)  # on the run's record
    acted = window.run.settings["guidance_capped"]  # how often it acted, and the status line says so
    assert acted["evaluations"] == 2 * 5 and 0 <= acted["capped"] <= 10
    assert ("guidance cap acted" in window.status_label.text()) == (acted["capped"] > 0)
    qtbot.waitUntil(lambda: "cs" in window.compare.item("s2").metrics, timeout=30_000)  # vs the reference
    assert -1.0 <= window.compare.item("s1").metrics["cs"] <= 1.0
    assert "CS" in window.compare.tiles["s1"].metrics.text()
    assert c.run_btn.isEnabled() and not c.cancel_btn.isEnabled()
    assert window.act_export.isEnabled()

    # favourites and a re-run of sample 1 from its seed (same settings -> the same face)
    window.compare.tiles["s2"].fav.setChecked(True)
    assert window.compare.item("s2").favourite
    run_and_wait(qtbot, window, rerun_key="s1")
    assert window.compare.item("mean").image is mean.image  # kept across a re-run of one sample
    again = window.compare.samples()[-1]
    assert again.seed == 7 and "re-run of Sample 1" in again.note
    diff = np.abs(again.image.astype(int) - samples[0].image.astype(int))
    assert diff.mean() < 1.0
    # the split view compares any two images
    cv = window.compare
    cv.combo_a.setCurrentIndex(cv.combo_a.findData("bicubic"))
    cv.combo_b.setCurrentIndex(cv.combo_b.findData(again.key))
    cv.split_slider.setValue(250)
    assert abs(cv.split.fraction - 0.25) < 1e-6


def _pixels(label) -> np.ndarray:
    from sdesr_gui.gui.imaging import rgb_from_qimage

    return rgb_from_qimage(label.pixmap().toImage())


def test_uncertainty_tile_overlay_and_live_map(qtbot, window, fast_weights):
    """K = 3: a map tile beside the mean estimate whose numbers are core.uncertainty's over the
    samples, the regions in words, an overlay that changes a sample tile and goes away again,
    the live view's running map, and a re-run that makes the map again over 4 samples."""
    from sdesr_gui.core import uncertainty as u

    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    c, cv = window.controls, window.compare
    c.steps.setValue(3)
    c.samples.setValue(3)
    run_and_wait(qtbot, window)
    # the live view showed the map of the running denoised estimates (made in the worker)
    last = window._last_preview
    assert last.samples == 3 and last.std is not None and last.std.shape == (128, 128)
    assert last.std_rgb.dtype == np.uint8 and not c.live_map.pixmap().isNull()
    assert c.live_map_note.text() == "bright = samples disagree = invented detail"

    keys = [it.key for it in cv.items]
    assert keys.index("uncertainty") == keys.index("mean") + 1
    tile = cv.tiles["uncertainty"]
    samples = [it.image for it in cv.samples()]
    expect = u.uncertainty_map(samples)
    assert np.array_equal(tile.item.uncertainty.std, expect.std) and cv.uncertainty.samples == 3
    z = cv._applied_zoom
    assert np.array_equal(_pixels(tile.image)[::z, ::z], u.colorize(expect.std))  # the map in its colours
    assert tile.scale is not None and "bright = samples disagree = invented detail" in tile.metrics.text()
    tip = tile.toolTip()
    assert "Bright = the samples disagree = invented detail" in tip
    for r in u.region_agreement(expect):
        assert r["label"] in tip and r["label"] in cv.agreement.text()
    assert "= samples disagree = invented detail" in cv.agreement.text() and cv.uncertainty_row.isVisible()
    assert "3 samples, by region: " in cv.agreement.text()

    # the overlay: a sample tile (and the mean's) changes, and comes back when the toggle goes off
    s1, mean = cv.tiles["s1"], cv.tiles["mean"]
    before, mean_before, bic = _pixels(s1.image), _pixels(mean.image), _pixels(cv.tiles["bicubic"].image)
    assert cv.overlay_check.isEnabled() and not cv.overlay_check.isChecked()
    cv.overlay_check.setChecked(True)
    on = _pixels(s1.image)
    assert not np.array_equal(on, before) and not np.array_equal(_pixels(mean.image), mean_before)
    assert np.array_equal(_pixels(cv.tiles["bicubic"].image), bic)  # only samples and the mean take it
    cv.opacity.setValue(100)  # the map alone
    full = _pixels(s1.image)
    assert np.array_equal(full[::z, ::z], u.colorize(expect.std))
    cv.combo_b.setCurrentIndex(cv.combo_b.findData("s1"))
    assert cv.split._labels[1] == "Sample 1 + map"
    cv.overlay_check.setChecked(False)
    assert np.array_equal(_pixels(s1.image), before) and np.array_equal(_pixels(mean.image), mean_before)
    assert cv.split._labels[1] == "Sample 1"

    # a re-run adds a sample: the map is of the run's current samples
    cv.overlay_check.setChecked(True)
    run_and_wait(qtbot, window, rerun_key="s2")
    assert cv.uncertainty.samples == 4 and len(cv.samples()) == 4
    assert np.array_equal(cv.tiles["uncertainty"].item.uncertainty.std,
                          u.uncertainty_map([it.image for it in cv.samples()]).std)
    assert not np.array_equal(_pixels(cv.tiles["s4"].image)[::z, ::z], cv.item("s4").image)  # still overlaid


def test_one_sample_shows_no_map(qtbot, window, fast_weights):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    window.controls.steps.setValue(2)
    window.controls.samples.setValue(1)
    run_and_wait(qtbot, window)
    cv = window.compare
    assert "uncertainty" not in cv.tiles and cv.uncertainty is None and window.session.uncertainty is None
    assert not cv.overlay_check.isEnabled() and "one sample cannot show" in cv.agreement.text()
    assert window._last_preview.std is None and window.controls.live_map.pixmap().isNull()
    assert "No disagreement map with one sample" in window.controls.live_map_note.text()


def test_before_after_shows_the_selected_sample_against_bicubic(qtbot, window, fast_weights):
    """Before / after opens on bicubic (left, before) vs the selected sample (right, after), not
    on bicubic vs LR, and follows the selection (a click on a tile, a re-run's new sample)."""
    from sdesr_gui.gui.imaging import rgb_from_qimage

    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    window.controls.steps.setValue(2)
    window.controls.samples.setValue(2)
    run_and_wait(qtbot, window)
    cv = window.compare
    # the run is of the selected face (the model pick rescales the selection: not a change of face)
    assert "press Run" not in cv.header.text()
    assert cv.selected == "s1"
    assert (cv.combo_a.currentData(), cv.combo_b.currentData()) == ("bicubic", "s1")
    assert cv.split._labels == ("Bicubic", "Sample 1")
    assert np.array_equal(rgb_from_qimage(cv.split._b), cv.item("s1").image)
    assert np.array_equal(rgb_from_qimage(cv.split._a), cv.item("bicubic").image)
    cv.tabs.setCurrentIndex(1)  # the tab itself
    cv.select("s2")
    assert cv.combo_b.currentData() == "s2" and np.array_equal(rgb_from_qimage(cv.split._b), cv.item("s2").image)
    cv.select("bicubic")  # selecting a non-sample leaves the comparison as it is
    assert (cv.combo_a.currentData(), cv.combo_b.currentData()) == ("bicubic", "s2")
    cv.select("s2")
    run_and_wait(qtbot, window)  # a new run keeps the selected sample on the right
    assert cv.combo_b.currentData() == cv.selected == "s2"
    run_and_wait(qtbot, window, rerun_key="s1")  # a re-run's new sample is selected and shown
    assert cv.selected == "s3" and cv.combo_b.currentData() == "s3" and cv.combo_a.currentData() == "bicubic"


def test_results_outlive_selection_changes_and_reference_can_be_loaded(qtbot, window, fast_weights, tmp_path):
    from sdesr_gui.core.provenance import atomic_save_png

    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    window.controls.steps.setValue(2)
    window.controls.samples.setValue(1)
    run_and_wait(qtbot, window)
    first = window.compare.item("s1").metrics["psnr"]
    window.source_panel.select_whole_image()  # another face: the samples stay until the next run
    assert window.compare.item("s1") is not None and "press Run" in window.compare.header.text()
    wrong = tmp_path / "small.png"
    atomic_save_png(wrong, np.zeros((64, 64, 3), np.uint8))
    assert not window.load_reference(wrong) and "128×128" in window.last_error
    ref = tmp_path / "ref.png"
    atomic_save_png(ref, np.full((128, 128, 3), 200, np.uint8))
    assert window.load_reference(ref)
    assert window.compare.item("reference").note == "loaded"
    assert window.compare.item("s1").metrics["psnr"] != first
    out = window.export_to(tmp_path / "exp")
    assert (out / "reference_hr.png").is_file()


def test_cancel_mid_run_and_recover(qtbot, window, fast_weights):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    c = window.controls
    c.preset.setCurrentIndex(c.preset.findData("pc"))
    c.steps.setValue(2000)
    c.corrector.setValue(1)
    c.samples.setValue(1)
    assert window.start_run()
    job = window._job
    qtbot.waitUntil(lambda: job.last_step >= 2, timeout=RUN_TIMEOUT)
    with qtbot.waitSignal(window.runCancelled, timeout=RUN_TIMEOUT):
        window.act_cancel.trigger()
        at_cancel = job.last_step
    assert job.last_step <= at_cancel + 1  # within one step
    qtbot.waitUntil(lambda: window._job is None, timeout=10_000)
    assert c.run_btn.isEnabled() and not c.cancel_btn.isEnabled() and window.act_run.isEnabled()
    assert "Cancelled" in c.progress.format()
    assert window.compare.samples() == []
    # the window recovers: the next run completes
    c.preset.setCurrentIndex(c.preset.findData("fast"))
    c.steps.setValue(2)
    run_and_wait(qtbot, window)
    assert len(window.compare.samples()) == 1


def test_sampler_error_arrives_as_dialog(qtbot, window, tmp_path):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a checkpoint")
    window.controls.model_combo.insertItem(0, "fake", str(fake))  # bypass the picker's own check
    window.controls.model_combo.setCurrentIndex(0)
    window.controls.steps.setValue(2)
    # the file is read (its magnification) before a job starts: refused there, in one sentence
    assert not window.start_run()
    assert "fake.safetensors" in window.last_error and "\n" not in window.last_error
    assert window._job is None and window.controls.run_btn.isEnabled()
    # a failure inside the sampler job arrives as a dialog too: a checkpoint whose tensors were altered
    data = bytearray((ROOT / "weights" / "sdesr_ve_8x.safetensors").read_bytes())
    data[-5] ^= 0x01  # the header is intact (it reads), the tensor hash check on load fails
    cut = tmp_path / "altered.safetensors"
    cut.write_bytes(bytes(data))
    window.controls.model_combo.insertItem(0, "altered", str(cut))
    window.controls.model_combo.setCurrentIndex(0)
    with qtbot.waitSignal(window.runFailed, timeout=RUN_TIMEOUT) as blocker:
        assert window.start_run()
    assert blocker.args[0] == window.last_error and "\n" not in window.last_error
    qtbot.waitUntil(lambda: window._job is None, timeout=10_000)
    assert window.controls.run_btn.isEnabled()


def test_export_report_hashes_match_files(qtbot, window, fast_weights, tmp_path):
    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    window.controls.steps.setValue(3)
    window.controls.samples.setValue(2)
    run_and_wait(qtbot, window)

    # inputs are evidence: the input's folder (and anything inside it) is refused
    before = sorted(os.listdir(SAMPLE_FACE.parent))
    assert window.export_to(SAMPLE_FACE.parent / "out") is None
    assert "evidence" in window.last_error
    assert sorted(os.listdir(SAMPLE_FACE.parent)) == before

    out = window.export_to(tmp_path / "exports", keys=["s2"])
    assert out is not None and out.parent == tmp_path / "exports"
    names = sorted(os.listdir(out))
    assert not any(n.endswith(".partial") or n.startswith(".") for n in names)
    assert "GENERATED_s2_seed1.png" in names and not any("s1_seed" in n for n in names)
    assert {"run.json", "report.html", "SHA256SUMS", "input_crop.png", "bicubic.png"} <= set(names)

    html = (out / "report.html").read_text(encoding="utf-8")
    pairs = dict(re.findall(r"data-file='([^']+)' data-sha256='([0-9a-f]{64})'", html))
    assert set(pairs) == set(names) - {"report.html", "SHA256SUMS"}
    for name, digest in pairs.items():
        assert sha256_file(out / name) == digest, name
    sums = dict(line.split("  ")[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert sha256_file(out / name) == digest
    # the embedded images are the very files
    import base64
    import json

    for name in [n for n in names if n.endswith(".png")]:
        data = (out / name).read_bytes()
        assert base64.b64encode(data).decode() in html
    rec = json.loads((out / "run.json").read_text())
    assert rec["inputs"][0]["sha256"] == sha256_file(SAMPLE_FACE)
    assert rec["inputs"][0]["face"]["kind"] == "detected" and rec["inputs"][0]["size"] == [128, 128]
    gen = [o for o in rec["outputs"] if o["generated"]]
    assert [o["kind"] for o in gen] == ["mean", "sample"]  # the mean estimate is exported, labelled
    assert gen[0]["path"] == "GENERATED_mean_estimate.png" and "not a sample" in gen[0]["what"]
    assert "seed" not in gen[0] and "ESTIMATE, NOT A SAMPLE" in html
    assert [o["seed"] for o in gen[1:]] == [1] and gen[1]["path"] == "GENERATED_s2_seed1.png"
    assert all(sha256_file(out / o["path"]) == o["sha256"] for o in rec["outputs"])
    assert "not an identification" in rec["notice"] and "GENERATED" in html


def test_export_dialog_path_runs_in_a_thread(qtbot, window, fast_weights, tmp_path):
    """The dialog's export runs in a worker: the window stays live, then `exported` (or a dialog)."""
    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    window.controls.steps.setValue(2)
    window.controls.samples.setValue(1)
    run_and_wait(qtbot, window)
    window.input_hashes.clear()  # as if hashing a long video had not finished yet

    with qtbot.waitSignal(window.exported, timeout=60_000) as sig:
        job = window.export_async(tmp_path / "async")
        assert job is not None and not window.act_export.isEnabled()
    out = Path(sig.args[0])
    assert out.parent == tmp_path / "async" and (out / "report.html").is_file()
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert sha256_file(out / name) == digest
    import json

    assert json.loads((out / "run.json").read_text())["inputs"][0]["sha256"] == sha256_file(SAMPLE_FACE)
    qtbot.waitUntil(lambda: window.act_export.isEnabled(), timeout=10_000)

    # a refused folder arrives as one sentence in a dialog, and nothing is written
    window.last_error = None
    job = window.export_async(SAMPLE_FACE.parent / "out")
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=30_000)
    assert "evidence" in window.last_error and "unexpectedly" not in window.last_error
    assert not (SAMPLE_FACE.parent / "out").exists()
    qtbot.waitUntil(lambda: window.act_export.isEnabled(), timeout=10_000)


def test_settings_persist(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "none"))
    ini = str(tmp_path / "s.ini")
    win = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), gallery_cache_dir=tmp_path / "c")
    qtbot.addWidget(win)
    win.controls.r_slider.setValue(42)
    win.controls.samples.setValue(3)
    win.controls.preset.setCurrentIndex(1)
    win.controls.steps.setValue(500)
    win.controls.sde.setCurrentIndex(win.controls.sde.findData("subvp"))
    assert not win.controls.take_settings().mirror  # off by default (twice the work)
    win.controls.mirror.setChecked(True)
    assert win.controls.take_settings().guidance_cap == DEFAULT_GUIDANCE_CAP
    win.controls.g_cap.setValue(0.0)  # "no cap"
    # the start from the mean estimate: off (pure noise) by default, the fast sampler's only
    assert win.controls.start_sigma.text() == "pure noise (posterior)"
    assert not win.controls.start_sigma.isEnabled()  # PC is chosen above
    win.controls.start_sigma.setValue(0.3)
    assert win.controls.take_settings().start_sigma is None  # PC: not used
    win._add_recent(str(SAMPLE_FACE))
    win.close()
    win2 = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), gallery_cache_dir=tmp_path / "c")
    qtbot.addWidget(win2)
    assert win2.controls.r_slider.value() == 42 and win2.controls.r_value() == 0.42
    assert win2.controls.samples.value() == 3
    assert win2.controls.sampler_key() == "pc" and win2.controls.steps.value() == 500
    assert win2.controls.sde_key() == "subvp" and win2.controls.take_settings().sde == "subvp"
    assert win2.controls.mirror.isChecked() and win2.controls.take_settings().mirror
    assert win2.controls.g_cap.value() == 0.0 and win2.controls.g_cap.text() == "no cap"
    assert win2.controls.start_sigma.value() == pytest.approx(0.3)
    win2.controls.preset.setCurrentIndex(win2.controls.preset.findData("fast"))
    assert win2.controls.start_sigma.isEnabled() and win2.controls.take_settings().start_sigma == pytest.approx(0.3)
    win2.controls.start_sigma.setValue(0.0)
    assert win2.controls.take_settings().start_sigma is None
    assert win2._recent()[0] == str(SAMPLE_FACE)
    assert any(a.text().endswith(SAMPLE_FACE.name) for a in win2.recent_menu.actions())


def test_sampler_presets_come_from_the_core_table(qtbot, tmp_path, monkeypatch):
    """The preset list, the N range and default per preset, M and r are the core table's values."""
    from sdesr_gui.core.enhance import SamplerSettings
    from sdesr_gui.core.presets import DEFAULT_SAMPLER, MAX_CORRECTOR_STEPS, MAX_SAMPLES, SAMPLER_PRESETS
    from sdesr_gui.gui.controls import ControlsPanel

    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "none"))
    c = ControlsPanel()
    qtbot.addWidget(c)
    assert [(c.preset.itemData(i), c.preset.itemText(i)) for i in range(c.preset.count())] == \
        [(k, p.label) for k, p in SAMPLER_PRESETS.items()]
    assert [c.preset.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(c.preset.count())] == \
        [p.summary for p in SAMPLER_PRESETS.values()]
    assert c.sampler_key() == DEFAULT_SAMPLER
    assert (c.corrector.maximum(), c.samples.maximum()) == (MAX_CORRECTOR_STEPS, MAX_SAMPLES)
    pc = SAMPLER_PRESETS["pc"]
    assert c.corrector.value() == pc.corrector_steps and c.r_value() == pc.snr
    for key, p in SAMPLER_PRESETS.items():
        c.preset.setCurrentIndex(c.preset.findData(key))
        assert (c.steps.minimum(), c.steps.maximum(), c.steps.value()) == (1, p.max_steps, p.steps)
        assert c.corrector.isEnabled() == c.r_slider.isEnabled() == p.is_pc
        s = c.take_settings()
        s.validate()
        assert s.sampler == key and s.n_steps() == p.steps
        if p.is_pc:
            assert (s.predictor, s.corrector, s.corrector_steps, s.snr) == \
                (p.predictor, p.corrector, p.corrector_steps, p.snr)
        else:
            assert s.fast_method == p.fast_method
    assert SamplerSettings(sampler="pc").n_steps() == c.steps.value() == 2000  # GUI and CLI agree on N
    # the SDE list and its tooltips are the core table's; VE (the model's own) by default
    from sdesr_gui.core.sde import DEFAULT_SDE, SDES

    assert [(c.sde.itemData(i), c.sde.itemText(i)) for i in range(c.sde.count())] == \
        [(k, cls.label) for k, cls in SDES.items()]
    assert [c.sde.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(c.sde.count())] == \
        [cls.summary for cls in SDES.values()]
    assert c.sde_key() == DEFAULT_SDE == "ve" and c.take_settings().sde == "ve"


def test_pc_under_vp_with_too_few_steps_is_refused(qtbot, window, fast_weights):
    """VP / sub-VP PC with N <= 20 would return all-NaN samples: one sentence, no run."""
    open_and_detect(qtbot, window, SAMPLE_FACE)
    use_models(window, fast_weights, classifier=False)
    c = window.controls
    c.preset.setCurrentIndex(c.preset.findData("pc"))
    c.sde.setCurrentIndex(c.sde.findData("vp"))
    c.steps.setValue(10)  # the box stops at the SDE's minimum
    assert c.steps.value() == 21
    # and should a setting still arrive below it, core refuses it in one sentence, with no run
    real = c.take_settings
    c.take_settings = lambda draw_seed=True: dataclasses.replace(real(draw_seed), steps=10)
    assert not window.start_run() and window._job is None
    assert "at least 21 steps" in window.last_error and "\n" not in window.last_error
    del c.take_settings  # the real method again
    # under VP with the fast sampler the run goes through, its record names the SDE
    c.preset.setCurrentIndex(c.preset.findData("fast"))
    c.steps.setValue(2)
    c.samples.setValue(1)
    run_and_wait(qtbot, window)
    assert window.run.settings["sde"] == "vp" and window.run.settings["sde_params"]["type"] == "vp"
    assert np.isfinite(window.compare.samples()[0].metrics["consistency"])  # measured on the float sample


def test_shortcuts_and_about(qtbot, window):
    seqs = {a.text(): [s.toString() for s in a.shortcuts()] for a in window.actions()}
    assert "Ctrl+O" in seqs["&Open…"] and "Ctrl+R" in seqs["&Run"] and "Esc" in seqs["&Cancel"]
    assert "Ctrl+E" in seqs["&Export…"] and "," in seqs["&Previous frame"] and "." in seqs["&Next frame"]
    from sdesr_gui.gui.about import AboutDialog, versions_html

    assert "torch" in versions_html()
    dlg = AboutDialog(window, tab=1)
    qtbot.addWidget(dlg)
    assert dlg.tabs.count() == 2


def test_screenshot_command(qtbot, tmp_path):
    from PySide6.QtGui import QImage

    from sdesr_gui.gui.app import main

    out = tmp_path / "shot.png"
    assert main(["--screenshot", str(out), str(SAMPLE_FACE)]) == 0
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1400, 900)
    assert main(["--screenshot", str(tmp_path / "no.png"), str(tmp_path / "missing.png")]) == 2
    assert not (tmp_path / "no.png").exists()
    broken = tmp_path / "broken.png"  # found broken by the worker that opens it
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["--screenshot", str(tmp_path / "no.png"), str(broken)]) == 2
    assert not (tmp_path / "no.png").exists()


def test_screenshot_after_a_run(qtbot, tmp_path, tiny_weights, monkeypatch):
    import shutil

    from PySide6.QtGui import QImage

    from sdesr_gui.gui.app import main

    wdir = tmp_path / "weights"
    wdir.mkdir()
    shutil.copy(tiny_weights["score"], wdir / "sdesr_ve_8x.safetensors")
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(wdir))
    out = tmp_path / "run.png"
    assert main(["--screenshot", str(out), "--run", "2", "--overlay", "--before-after", str(SAMPLE_FACE)]) == 0
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1400, 900)
    with pytest.raises(SystemExit) as e:  # --run only makes sense for a screenshot
        main(["--run", "2", str(SAMPLE_FACE)])
    assert e.value.code == 2


def test_drop_a_file_opens_it(qtbot, window):
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(SAMPLE_FACE))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.source_panel.detectionFinished, timeout=60_000):
        window.dropEvent(ev)
    assert window.source_panel.path == SAMPLE_FACE and window.source_panel.selection is not None


def test_theme_follows_a_dark_system_scheme(qapp):
    from sdesr_gui.gui.theme import dark_palette

    p = dark_palette()
    assert p.color(p.ColorRole.Window).lightness() < 80 and p.color(p.ColorRole.Text).lightness() > 180


def test_export_dialog_preselects_favourites_and_refuses_evidence(qtbot, tmp_path):
    from sdesr_gui.gui.compare_view import CompareItem
    from sdesr_gui.gui.export import ExportDialog

    img = np.zeros((128, 128, 3), np.uint8)
    items = [CompareItem("s1", "Sample 1", img, "sample", seed=3),
             CompareItem("s2", "Sample 2", img, "sample", seed=4, favourite=True)]
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    dlg = ExportDialog(items, str(evidence / "out"), [evidence], has_candidates=False)
    qtbot.addWidget(dlg)
    assert dlg.keys() == ["s2"] and not dlg.with_candidates.isEnabled()
    dlg._accept()
    assert "evidence" in dlg.error.text() and dlg.result() != dlg.DialogCode.Accepted
    dlg.folder.setText(str(tmp_path / "exports"))
    dlg._accept()
    assert dlg.result() == dlg.DialogCode.Accepted


def test_fast_preset_says_why_r_and_m_are_off(qtbot, tmp_path, monkeypatch):
    """In the Fast preset r and M are disabled *and* say so in words (a disabled slider can look
    active); Paper PC turns them back on with their value."""
    from sdesr_gui.gui.controls import ControlsPanel

    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "none"))
    c = ControlsPanel()
    qtbot.addWidget(c)
    c.preset.setCurrentIndex(c.preset.findData("fast"))
    assert not c.r_slider.isEnabled() and not c.corrector.isEnabled() and not c.r_label.isEnabled()
    assert "PC only" in c.r_label.text()
    assert "no Langevin corrector" in c.r_slider.toolTip() and "no Langevin corrector" in c.corrector.toolTip()
    c.preset.setCurrentIndex(c.preset.findData("pc"))
    assert c.r_slider.isEnabled() and c.r_label.text() == f"{c.r_value():.2f}"
    assert "no Langevin corrector" not in c.r_slider.toolTip()


def test_pc_steps_box_enforces_the_sdes_minimum(qtbot, tmp_path, monkeypatch):
    """PC under VP / sub-VP with N <= 20 gives NaN or wildly wrong samples: the steps box cannot
    go there (before, only the dialog on Run said so); VE and the fast sampler keep N >= 1."""
    from sdesr_gui.core.sde import SDES
    from sdesr_gui.gui.controls import ControlsPanel

    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "none"))
    c = ControlsPanel()
    qtbot.addWidget(c)
    c.preset.setCurrentIndex(c.preset.findData("pc"))
    c.sde.setCurrentIndex(c.sde.findData("ve"))
    c.steps.setValue(10)
    assert c.steps.value() == 10 and c.steps.minimum() == 1
    c.sde.setCurrentIndex(c.sde.findData("vp"))
    low = SDES["vp"]().pc_min_steps()
    assert low == 21 and c.steps.minimum() == low and c.steps.value() == low
    c.steps.setValue(5)
    assert c.steps.value() == low
    c.take_settings().validate()  # what the box allows, core accepts
    c.preset.setCurrentIndex(c.preset.findData("fast"))
    assert c.steps.minimum() == 1


def test_take_settings_draws_a_random_seed_only_for_a_new_run(qtbot, tmp_path, monkeypatch):
    from sdesr_gui.gui.controls import ControlsPanel

    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "none"))
    c = ControlsPanel()
    qtbot.addWidget(c)
    c.seed.setValue(7)
    c.random_seed.setChecked(True)
    assert c.take_settings(draw_seed=False).seed == 7 and c.seed.value() == 7  # a re-run: untouched
    drawn = {c.take_settings().seed for _ in range(3)}
    assert c.seed.value() in drawn and drawn != {7}


def test_the_app_picks_the_16x_model_for_a_tiny_face_and_says_so(qtbot, tmp_path, monkeypatch, tiny_weights):
    import shutil

    from PIL import Image

    from sdesr_gui.core.enhance import AUTO_MODEL

    wdir = tmp_path / "installed"
    wdir.mkdir()
    shutil.copy(tiny_weights["score"], wdir / "sdesr_ve_8x.safetensors")
    shutil.copy(tiny_weights["score16"], wdir / "sdesr_ve_16x.safetensors")
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(wdir))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, gallery_cache_dir=tmp_path / "cache", gallery_embedder=TinyEmbedder())
    qtbot.addWidget(win)
    win.show()
    try:
        assert win.controls.weights_path() == AUTO_MODEL  # both installed: chosen per face
        assert "16×" in win.controls.model_info.text() and "footage" in win.controls.model_info.text()
        win.controls.steps.setValue(win.controls.steps.minimum())
        win.controls.samples.setValue(1)
        # a street scene with a face about 10 px wide, picked by a hand-drawn box
        face = np.asarray(Image.open(SAMPLE_FACE).convert("RGB").resize((12, 12), Image.BICUBIC))
        scene = np.full((120, 160, 3), 70, np.uint8)
        scene[50:62, 70:82] = face
        path = tmp_path / "street.png"
        Image.fromarray(scene).save(path)
        open_and_detect(qtbot, win, path)
        win.source_panel.set_manual_box((71, 51, 81, 61))
        sel = win.source_panel.selection
        assert sel is not None and sel.details["face_width"] < 12 and sel.lr.shape == (16, 16, 3)
        run_and_wait(qtbot, win)
        status = win.status_label.text()
        assert "with the 16× model (the face is about" in status and "px wide" in status
        run = win.session.run
        assert run.selection.lr.shape == (8, 8, 3) and run.selection.details["scale"] == 16
        assert run.model["sha256"] == sha256_file(wdir / "sdesr_ve_16x.safetensors")
        lr_item = next(it for it in win.compare.items if it.key == "lr")
        assert lr_item.note == "8×8, shown ×16"
        # the big astronaut frame stays with the 8x model
        open_and_detect(qtbot, win, SAMPLE_FACE)
        run_and_wait(qtbot, win)
        assert win.session.run.selection.lr.shape == (16, 16, 3) and "16× model" not in win.status_label.text()
        assert win.session.run.model["sha256"] == sha256_file(wdir / "sdesr_ve_8x.safetensors")
        assert "footage" not in win.status_label.text()  # no footage model installed: nothing judged
        # with a footage model installed, the automatic choice asks it about the LR first and says so
        shutil.copy(tiny_weights["footage_always"], wdir / "sdesr_ve_8x_footage.safetensors")
        run_and_wait(qtbot, win)
        assert "LR degradation estimate" in win.status_label.text() and "the footage model" in win.status_label.text()
        run = win.session.run
        assert run.model["sha256"] == sha256_file(wdir / "sdesr_ve_8x_footage.safetensors")
        assert run.model["choice"]["degraded"] is True
        shutil.copy(tiny_weights["footage_never"], wdir / "sdesr_ve_8x_footage.safetensors")
        run_and_wait(qtbot, win)
        assert "the clean-trained model" in win.status_label.text()
        assert win.session.run.model["sha256"] == sha256_file(wdir / "sdesr_ve_8x.safetensors")
        (wdir / "sdesr_ve_8x_footage.safetensors").unlink()
        # asking for the 8x model by file keeps the user's choice, even for the tiny face
        assert win.controls.add_model_file(wdir / "sdesr_ve_8x.safetensors", "score")
        open_and_detect(qtbot, win, path)
        win.source_panel.set_manual_box((71, 51, 81, 61))
        run_and_wait(qtbot, win)
        assert win.session.run.selection.lr.shape == (16, 16, 3)
    finally:
        win.shutdown()
