"""Gallery panel: index a small gallery with progress, rank candidates, consensus, incremental updates.

The face embedder here is a tiny fake with the real one's interface (the real embedders are
tested with core.gallery). The index is core.gallery.GalleryIndex when that module exists;
until it lands, a minimal stand-in with the same interface is used.
"""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from sdesr_gui.gui.gallery_panel import GalleryPanel  # noqa: E402
from sdesr_gui.core.matching import consensus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class FakeEmbedder:
    """Colour-layout features: a 6x6 RGB thumbnail, mean-removed and L2-normalised."""

    name = "fake"
    dim = 108

    def embed_aligned(self, images):
        out = []
        for img in images:
            a = np.asarray(img, dtype=np.float64)
            h, w = a.shape[:2]
            ys, xs = np.linspace(0, h - 1, 6).astype(int), np.linspace(0, w - 1, 6).astype(int)
            v = a[ys][:, xs].reshape(-1)
            v = v - v.mean()
            out.append(v / max(np.linalg.norm(v), 1e-9))
        return np.stack(out).astype(np.float32)

    def embed_image(self, rgb):
        return self.embed_aligned([rgb])[0], None


class StandInIndex:
    """The GalleryIndex interface, reduced: one embedding per image file, identity = folder."""

    EXT = {".png", ".jpg", ".jpeg"}

    def __init__(self, folder, embedder, cache_dir=None):
        self.folder, self.embedder, self.items = Path(folder), embedder, {}

    def update(self, progress=None, cancel=None):
        from types import SimpleNamespace

        from sdesr_gui.core.video import load_still

        files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in self.EXT)
        added = [p for p in files if p not in self.items]
        removed = [p for p in self.items if p not in files]
        for p in removed:
            del self.items[p]
        for i, p in enumerate(added):
            emb, _ = self.embedder.embed_image(load_still(p))
            self.items[p] = emb
            if progress:
                progress(i + 1, len(added))
        return SimpleNamespace(added=len(added), updated=0, removed=len(removed),
                               unchanged=len(files) - len(added), skipped=[])

    def __len__(self):
        return len(self.items)

    def query(self, embedding, top_k=10):
        from types import SimpleNamespace

        scored = [(float(np.dot(embedding, e)), p) for p, e in self.items.items()]
        scored.sort(key=lambda t: -t[0])
        return [SimpleNamespace(identity=p.parent.name, file=str(p), score=s) for s, p in scored[:top_k]]


def index_factory():
    try:
        from sdesr_gui.core.gallery import GalleryIndex
    except ImportError:
        return lambda folder, emb, cache: StandInIndex(folder, emb, cache)
    return lambda folder, emb, cache: GalleryIndex(folder, emb, cache_dir=cache)


def _face(seed):
    from sdesr_gui.core.video import load_still

    face = load_still(ROOT / "resources" / "sample_face.png").astype(np.int16)
    if seed == 0:
        return face.astype(np.uint8)
    rng = np.random.default_rng(seed)
    shifted = np.roll(face, shift=int(rng.integers(20, 60)), axis=int(rng.integers(0, 2)))
    return np.clip(shifted[:, :, rng.permutation(3)] + rng.integers(-40, 40, 3), 0, 255).astype(np.uint8)


@pytest.fixture
def gallery(tmp_path):
    from sdesr_gui.core.provenance import atomic_save_png

    g = tmp_path / "gallery"
    for k, name in enumerate(["alice", "bob", "carol", "dave"]):
        (g / name).mkdir(parents=True)
        atomic_save_png(g / name / f"{name}_1.png", _face(k))
    return g


def test_index_and_rank_candidates(qtbot, gallery, tmp_path):
    panel = GalleryPanel(embedder=FakeEmbedder(), index_factory=index_factory(), cache_dir=tmp_path / "cache")
    qtbot.addWidget(panel)
    before = sorted(p.name for p in gallery.rglob("*"))
    with qtbot.waitSignal(panel.indexed, timeout=60_000):
        panel.set_folder(gallery)
    assert panel.index is not None and "added 4" in panel.status.text()

    probe = _face(0)
    noisy = np.clip(probe.astype(int) + np.random.default_rng(3).integers(-8, 8, probe.shape), 0, 255).astype(np.uint8)
    bicubic = _face(2)  # pretend the baseline looks like carol
    with qtbot.waitSignal(panel.matched, timeout=60_000) as blocker:
        panel.set_probes([("s1", "Sample 1", probe), ("s2", "Sample 2", noisy)], bicubic, probe)
    res = blocker.args[0]
    assert "alice" in panel.sample_table.identities()[0]
    assert "alice" in panel.consensus_table.identities()[0]
    assert "carol" in panel.bicubic_table.identities()[0]
    assert res.stability["rank1_agreement"] == 1.0 and res.consensus[0]["rank1_frequency"] == 1.0
    assert res.per_sample["s1"][0]["score"] >= res.per_sample["s1"][-1]["score"]
    assert res.cs["s1"] == pytest.approx(1.0, abs=1e-5) and res.cs["s2"] < 1.0
    assert "not identifications" in panel.notice.text()
    panel.show_sample("s2")
    assert panel.sample_title.text().startswith("Sample 2")
    exp = res.to_export(["s1"])
    assert list(exp["per_sample"]) == ["Sample 1"] and exp["consensus"]

    # incremental: one new face is embedded, the others are unchanged
    from sdesr_gui.core.provenance import atomic_save_png

    (gallery / "erin").mkdir()
    atomic_save_png(gallery / "erin" / "erin_1.png", _face(9))
    with qtbot.waitSignal(panel.indexed, timeout=60_000) as blocker:
        panel.start_index()
    rep = blocker.args[0]
    added = rep.added if isinstance(rep.added, int) else len(rep.added)
    unchanged = rep.unchanged if isinstance(rep.unchanged, int) else len(rep.unchanged)
    assert (added, unchanged) == (1, 4)
    # the gallery folder is only read
    assert sorted(p.name for p in gallery.rglob("*")) == sorted(before + ["erin", "erin_1.png"])
    panel.shutdown()


def test_consensus_prefers_identities_all_samples_agree_on():
    a = {"identity": "a", "file": "a.png"}
    b = {"identity": "b", "file": "b.png"}
    c = {"identity": "c", "file": "c.png"}
    per = {"s1": [dict(b, score=0.95), dict(a, score=0.80)],
           "s2": [dict(a, score=0.85), dict(c, score=0.50)],
           "s3": [dict(a, score=0.90), dict(b, score=0.40)]}
    rows, st = consensus(per, top_k=3)
    assert [r["identity"] for r in rows][0] == "a"
    assert rows[0]["ranks"] == [2, 1, 1] and rows[0]["in_top_k"] == "3/3"
    assert rows[0]["rank1_frequency"] == pytest.approx(2 / 3)
    assert st["consensus_rank1"] == "a" and st["rank1_agreement"] == pytest.approx(0.6667, abs=1e-4)
    # b is missing from s2: s2's lowest listed score (0.50) stands in, an upper bound
    brow = next(r for r in rows if r["identity"] == "b")
    assert brow["mean_score"] == pytest.approx((0.95 + 0.50 + 0.40) / 3)


def test_window_uses_gallery_after_a_run(qtbot, tmp_path, gallery, monkeypatch):
    """Samples of a run are matched automatically once the gallery is indexed; CS fills in."""
    from PySide6.QtCore import QSettings

    from sdesr_gui.gui.main_window import MainWindow

    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "none"))
    win = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     gallery_embedder=FakeEmbedder(), gallery_index_factory=index_factory(),
                     gallery_cache_dir=tmp_path / "cache")
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.gallery.indexed, timeout=60_000):
        win.gallery.set_folder(gallery)
    # a finished run, as the sampler worker delivers it (the worker itself is tested elsewhere)
    from sdesr_gui.core import selection
    from sdesr_gui.gui.worker import SamplerOutcome

    sel = selection.whole_image(_face(0))
    out = SamplerOutcome([_face(0), _face(1)], [5, 6], sel.bicubic, [{"consistency": 1.0}] * 2,
                         {"consistency": 2.0}, {"sampler": "fast", "seed": 5}, 2, 0.1, 0.0, "cpu",
                         mean=_face(3), mean_metrics={"consistency": 0.5})
    with qtbot.waitSignal(win.gallery.matched, timeout=60_000):
        win._on_done(out, sel, ("w", "", "cpu"), {"input_path": None, "input_kind": "still", "frame": {"index": 0},
                                                  "reference": sel.reference, "reference_loaded": False})
    assert "cs" in win.compare.item("s1").metrics
    cands = win.gallery.candidates_for_export(["s1"])
    assert "alice" in cands["per_sample"]["Sample 1"][0]["identity"]
    # the mean estimate is matched as its own probe, never as a sample: the consensus is the
    # samples' alone, and a column marks each candidate's rank for the mean estimate
    assert win.compare.item("mean").kind == "mean"
    assert [k for k, _, _ in win.gallery._probes[0]] == ["s1", "s2"] and win.gallery._probes[3] is out.mean
    res = win.gallery.result
    assert res.stability["samples"] == 2 and set(res.per_sample) == {"s1", "s2"} and res.mean
    assert "cs" in win.compare.item("mean").metrics  # measured against the reference like the samples
    table = win.gallery.consensus_table
    assert not table.isColumnHidden(7) and table.horizontalHeaderItem(7).text() == "mean est."
    assert "not counted" in table.horizontalHeaderItem(7).toolTip()
    # the false-match-rate column: explained in its header, one cell per candidate from its calibration
    from sdesr_gui.core.calibration import short_rate

    assert table.horizontalHeaderItem(3).text() == "strangers ≥"
    assert "upper bound" in table.horizontalHeaderItem(3).toolTip()
    assert "False-match rate" in win.gallery.sample_table.horizontalHeaderItem(3).toolTip()
    for r, row in enumerate(res.consensus):
        rank = row["mean_estimate_rank"]
        assert table.item(r, 7).text() == ("–" if rank is None else f"✓ {rank}")
        assert table.item(r, 3).text() == short_rate(row.get("calibration"))
    assert "The mean estimate (matched on its own, not counted as a sample)" in win.gallery.status.text()
    assert ("agrees" if res.mean_agreement["agrees_on_lead"] else "disagrees") in win.gallery.status.text()
    assert "not counted as a sample" in win.gallery.stability_label.toolTip()
    win.compare.select("mean")  # the mean's own candidates, titled as an estimate
    assert win.gallery.sample_title.text().startswith("Mean estimate (not a sample)")
    assert win.gallery.sample_table.identities()[0] == res.mean[0]["identity"]
    exp = win.gallery.candidates_for_export()
    assert set(exp["per_sample"]) == {"Sample 1", "Sample 2"} and exp["mean_estimate"]["candidates"] == res.mean
    # exports never go into the gallery folder
    assert win.export_to(gallery / "exports") is None and "evidence" in win.last_error
    assert not (gallery / "exports").exists()
    win.shutdown()


def test_candidate_rows_show_the_false_match_rate_and_explain_it_on_hover(qtbot) -> None:
    from sdesr_gui.core import calibration as cal
    from sdesr_gui.gui.gallery_panel import FMR_COLUMN, CandidateTable

    rng = np.random.default_rng(0)
    c = cal.build_calibration("dlib", {"sample": rng.normal(0.95, 0.02, 2000)},
                              {"sample": rng.normal(0.85, 0.03, 100_000)}, {})
    rows = [{"identity": "alice", "file": "alice/1.png", "score": 0.93},
            {"identity": "bob", "file": "bob/1.png", "score": 0.88}]
    cal.annotate(rows, c, "sample", gallery_faces=5000)
    table = CandidateTable(["identity", "cosine", FMR_COLUMN])
    qtbot.addWidget(table)
    table.fill(rows, ["identity", "score", "fmr"], {})
    assert table.item(0, 3).text() == cal.format_rate(rows[0]["calibration"]["fmr"])
    assert table.item(1, 3).text().startswith("1 in ")
    tip = table.item(0, 3).toolTip()
    assert "alice/1.png" in tip and "strangers' photos score this high" in tip and "5,000 photos" in tip


def test_about_six_candidates_are_visible_in_the_default_window(qtbot, tmp_path) -> None:
    """At 1400x900 the gallery's tables showed two of the top-10 rows; the window now opens with
    room for at least five in every table."""
    from PySide6.QtCore import QSettings

    from sdesr_gui.gui.main_window import MainWindow

    win = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     gallery_cache_dir=tmp_path / "cache")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    assert (win.width(), win.height()) == (1400, 900)
    for t in (win.gallery.sample_table, win.gallery.consensus_table, win.gallery.bicubic_table):
        rows = (t.viewport().height() - t.horizontalScrollBar().sizeHint().height()) \
            // t.verticalHeader().defaultSectionSize()
        assert rows >= 5, rows
    win.shutdown()


def test_search_settings_pick_the_backend_and_workers(qtbot, gallery, tmp_path, monkeypatch):
    """Search… chooses the backend (faiss here) and the indexing workers; they are used for the
    next index, shown in the status line, and kept in the settings."""
    pytest.importorskip("faiss")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QDialog

    from sdesr_gui.gui.gallery_panel import SearchSettingsDialog

    panel = GalleryPanel(embedder=FakeEmbedder(), cache_dir=tmp_path / "cache")
    qtbot.addWidget(panel)
    dlg = SearchSettingsDialog("auto", "", 1)
    qtbot.addWidget(dlg)
    assert not dlg.uri.isEnabled()
    dlg.backend.setCurrentIndex(dlg.backend.findData("milvus"))
    assert dlg.uri.isEnabled()
    dlg._accept()  # milvus without a URI is refused: the dialog stays open
    assert dlg.result() != QDialog.DialogCode.Accepted
    dlg.backend.setCurrentIndex(dlg.backend.findData("faiss"))
    dlg.workers.setValue(2)
    assert dlg.values() == ("faiss", "", 2)

    monkeypatch.setattr(SearchSettingsDialog, "exec", lambda self: QDialog.DialogCode.Accepted)
    monkeypatch.setattr(SearchSettingsDialog, "values", lambda self: ("faiss", "", 2))
    panel.edit_search_settings()
    assert (panel.backend, panel.workers) == ("faiss", 2)
    with qtbot.waitSignal(panel.indexed, timeout=120_000):
        panel.set_folder(gallery)
    assert "added 4" in panel.status.text() and "search: faiss" in panel.status.text()
    assert panel.index.backend_name == "faiss" and len(panel.index) == 4
    with qtbot.waitSignal(panel.matched, timeout=60_000):
        panel.set_probes([("s1", "Sample 1", _face(0))], _face(2), _face(0))
    assert "alice" in panel.sample_table.identities()[0]

    s = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    panel.save(s)
    other = GalleryPanel(embedder=FakeEmbedder(), cache_dir=tmp_path / "cache")
    qtbot.addWidget(other)
    other.restore(s)
    assert (other.backend, other.workers) == ("faiss", 2)
    panel.shutdown()
