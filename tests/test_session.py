"""core.session: the run model behind the window (Qt-free): selection, runs, re-runs, reference,
metrics, favourites and export, observed through events."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sdesr_gui.core import selection
from sdesr_gui.core.errors import ExportError, InputError
from sdesr_gui.core.provenance import atomic_save_png, sha256_file
from sdesr_gui.core.session import EVENTS, MEAN_NOTE, RunContext, SamplerOutcome, Session, write_export


def face(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)


class Recorder:
    def __init__(self, session: Session):
        self.events: list[tuple] = []
        for e in EVENTS:
            session.subscribe(e, lambda *a, e=e: self.events.append((e, *a)))

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    def clear(self) -> None:
        self.events.clear()


def outcome(sel, seeds, settings=None, tag=None, mean=None) -> SamplerOutcome:
    samples = [face(100 + s) for s in seeds]
    return SamplerOutcome(samples, list(seeds), sel.bicubic, [{"consistency": 1.0 + i} for i in range(len(seeds))],
                          {"consistency": 3.0}, dict(settings or {"sampler": "fast", "h": 0.0, "seed": seeds[0]}),
                          nfe=len(seeds) * 2, seconds=0.5, load_seconds=0.1, device="cpu", tag=tag,
                          mean=mean, mean_metrics={"consistency": 0.25} if mean is not None else {})


MODEL = {"name": "m", "path": "/w/m.safetensors", "sha256": "a" * 64}


@pytest.fixture
def session_with_run(tmp_path):
    """A session with an input (a still in its own 'evidence' folder), a selection and a run of 2 samples."""
    src = tmp_path / "evidence" / "cam.png"
    src.parent.mkdir()
    img = face(0)
    atomic_save_png(src, img)
    s = Session()
    s.set_input(src, "still", {"path": str(src), "kind": "still", "size": [128, 128], "frame_count": 1})
    sel = selection.whole_image(img)
    s.set_selection(sel, {"index": 0, "count": 1})
    plan = s.plan_run()
    s.record_result(outcome(sel, [7, 8]), plan.selection, plan.context, MODEL, None)
    return s, sel, src


def test_events_are_checked_and_can_be_unsubscribed():
    s = Session()
    with pytest.raises(ValueError, match="Unknown session event"):
        s.subscribe("itmes", lambda: None)
    seen = []
    off = s.subscribe("header", seen.append)
    s.set_selection(None)
    off()
    s.set_selection(None)
    assert len(seen) == 1 and "press Run" in seen[0]


def test_selection_without_a_run_shows_lr_bicubic_and_reference():
    s = Session()
    rec = Recorder(s)
    with pytest.raises(InputError, match="Select a face first"):
        s.plan_run()
    sel = selection.whole_image(face(1))
    s.set_selection(sel, {"index": 0})
    assert [it.key for it in s.items] == ["lr", "bicubic", "reference"]
    assert s.item("reference").note == "from the input" and s.current_reference() is sel.reference
    assert rec.names() == ["items", "header"] and not s.can_export
    lr_only = selection.whole_image(face(2)[:16, :16])
    s.set_selection(lr_only)
    assert [it.key for it in s.items] == ["lr", "bicubic"]  # no reference HR for an LR still


def test_a_run_then_a_rerun_from_a_sample_seed(tmp_path):
    s = Session()
    s.set_input(tmp_path / "clip.avi", "video", {"fps": 25.0, "frame_count": 9, "path": "x", "kind": "video"})
    assert s.source_info == {"fps": 25.0, "frame_count": 9}
    sel = selection.whole_image(face(3), frame_index=4)
    s.set_selection(sel, {"index": 4, "count": 9})
    plan = s.plan_run()
    assert plan.tag is None and plan.seed is None and plan.lr is sel.lr
    assert plan.context.input_path == tmp_path / "clip.avi" and plan.context.frame == {"index": 4, "count": 9}
    assert plan.reference is sel.reference and not plan.context.reference_loaded

    rec = Recorder(s)
    keys = s.record_result(outcome(sel, [7, 8]), sel, plan.context, MODEL, None)
    assert keys == ["s1", "s2"] and [it.seed for it in s.samples()] == [7, 8]
    assert all(it.generated for it in s.samples()) and s.item("s2").metrics == {"consistency": 2.0}
    assert s.run.input_kind == "video" and s.run.frame["index"] == 4 and s.run.model == MODEL
    assert s.run.timings == {"load_seconds": 0.1, "sampling_seconds": 0.5, "nfe": 4}
    assert "clip.avi, frame 4 (frame face)" in s.header and "changed" not in s.header
    assert rec.names() == ["items", "header", "run"] and s.can_export

    # re-run sample 1: its seed, one sample; the note says what differs
    settings = SimpleNamespace(seed=None, samples=4)
    again = s.plan_run("s1")
    again.apply(settings)
    assert (settings.seed, settings.samples) == (7, 1) and again.tag == ("rerun", "s1") and again.context is None
    assert s.plan_run("nope") is None
    rec.clear()
    keys = s.record_result(outcome(sel, [7], tag=again.tag), sel, None, MODEL, None)
    assert keys == ["s3"] and s.item("s3").note == "re-run of Sample 1, same settings"
    assert rec.names() == ["items", "added", "run"] and rec.events[1] == ("added", "s3")
    other = dict(MODEL, sha256="b" * 64, name="m2")
    s.record_result(outcome(sel, [8], {"sampler": "fast", "h": 50.0, "seed": 8}, ("rerun", "s2")), sel, None,
                    other, None)
    s4 = s.item("s4")
    assert s4.note == "re-run of Sample 2: h=50.0, model=m2" and s4.settings["model"] == other
    assert s.run.model == MODEL  # the run's own record is unchanged

    # the samples outlive a change of selection; the header says so
    s.set_selection(None)
    assert [it.key for it in s.samples()] == ["s1", "s2", "s3", "s4"] and "press Run" in s.header


def test_reference_is_checked_and_remeasures_the_run(session_with_run, tmp_path):
    s, sel, _ = session_with_run
    s.set_metrics("cs", {"s1": 0.5, "bicubic": 0.25, "unknown": 1.0})
    assert s.item("s1").metrics["cs"] == 0.5 and s.item("bicubic").metrics["cs"] == 0.25
    psnr = s.item("s1").metrics["psnr"] if "psnr" in s.item("s1").metrics else None
    wrong = tmp_path / "small.png"
    atomic_save_png(wrong, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="128×128"):
        s.load_reference(wrong)
    rec = Recorder(s)
    ref = tmp_path / "ref.png"
    atomic_save_png(ref, np.full((128, 128, 3), 200, np.uint8))
    s.load_reference(ref)
    assert s.run.reference_loaded and s.item("reference").note == "loaded"
    m = s.item("s1").metrics
    assert "cs" not in m and m["psnr"] != psnr and 0 < m["ssim"] <= 1  # CS must be measured again
    assert s.run.bicubic_metrics["psnr"] == s.item("bicubic").metrics["psnr"]
    assert rec.names() == ["items", "run"]
    assert s.selection_reference(sel) == (s.reference_override, True)
    s.set_input(tmp_path / "other.png", "still")
    assert s.reference_override is None and s.run is not None  # a new input drops the loaded reference


def test_export_plan_and_write(session_with_run, tmp_path):
    s, sel, src = session_with_run
    with pytest.raises(ExportError, match="nothing to export"):
        Session().plan_export(tmp_path / "out")
    s.set_favourite("s2", True)
    plan = s.plan_export(tmp_path / "out", candidates=lambda keys: {"per_sample": {k: [] for k in keys}})
    assert plan.keys == ["s2"] and plan.job.candidates == {"per_sample": {"s2": []}}
    assert plan.forbidden == [src.parent.resolve()] and plan.name.startswith("cam_f0_")
    assert plan.job.input["sha256"] is None  # not hashed yet: write_export does it off the GUI thread
    names = [im.key for im in plan.job.images]
    assert names == ["input_crop", "input_lr_16x16", "bicubic", "s2_seed8"]
    res = write_export(plan)
    assert (res.folder / "GENERATED_s2_seed8.png").is_file()
    rec = json.loads((res.folder / "run.json").read_text())
    assert rec["inputs"][0]["sha256"] == sha256_file(src) and rec["inputs"][0]["size"] == [128, 128]
    s.export_done(plan, res)
    assert s.last_export == res.folder and s.input_hash(src) == sha256_file(src)
    # inputs are evidence: an export into their folder is refused and leaves nothing
    before = sorted(p.name for p in src.parent.iterdir())
    with pytest.raises(ExportError, match="evidence"):
        write_export(s.plan_export(src.parent / "out", keys=["s1"]))
    assert sorted(p.name for p in src.parent.iterdir()) == before


def test_run_context_from_a_mapping():
    ctx = RunContext.of({"input_path": "/x/clip.avi", "input_kind": "video", "frame": {"index": 2},
                         "reference": None, "reference_loaded": False})
    assert ctx.input_path == Path("/x/clip.avi") and ctx.source_info == {}
    assert RunContext.of(None).input_path is None


MEAN_RECORD = {"what": "posterior-mean estimate: ...; an estimate, not a sample", "sigma": 348.0, "noise_seed": 0}


def test_a_run_with_a_mean_estimate_shows_and_exports_it(tmp_path):
    """The mean estimate is its own tile beside bicubic, never a sample; kept across re-runs,
    measured against a new reference and exported as generated, labelled as an estimate."""
    src = tmp_path / "evidence" / "cam.png"
    src.parent.mkdir()
    atomic_save_png(src, face(0))
    s = Session()
    s.set_input(src, "still")
    sel = selection.whole_image(face(5))
    s.set_selection(sel, {"index": 0})
    plan = s.plan_run()
    settings = {"sampler": "fast", "sde": "ve", "h": 0.0, "seed": 3, "mean_estimate": MEAN_RECORD}
    mean = face(50)
    s.record_result(outcome(sel, [3, 4], settings, mean=mean), sel, plan.context, MODEL, None)
    assert [it.key for it in s.items] == ["lr", "bicubic", "mean", "reference", "s1", "s2"]
    m = s.item("mean")
    assert m.kind == "mean" and m.title == "Mean estimate" and m.seed is None and m.generated
    assert m.note == MEAN_NOTE and "sample" not in m.title.lower() and m.image is mean
    assert m.metrics == {"consistency": 0.25}
    assert [it.key for it in s.samples()] == ["s1", "s2"]  # never matched or exported as a sample
    assert s.export_keys() == ["s1", "s2"]

    # a re-run of one sample keeps the mean (one more sample, nothing else changes)
    again = s.plan_run("s1")
    s.record_result(outcome(sel, [3], dict(settings, sde="vp"), tag=again.tag, mean=face(51)), sel, None, MODEL, None)
    assert [it.key for it in s.items] == ["lr", "bicubic", "mean", "reference", "s1", "s2", "s3"]
    assert s.item("mean").image is mean and s.item("s3").note == "re-run of Sample 1: sde=vp"
    assert s.plan_run("mean") is None  # no seed: nothing to re-run

    # a loaded reference measures it like the bicubic baseline
    s.set_reference(np.full((128, 128, 3), 90, np.uint8), "ref")
    assert {"consistency", "psnr", "ssim"} <= set(s.item("mean").metrics)
    assert s.run.mean_metrics == s.item("mean").metrics
    assert [it.key for it in s.items][:3] == ["lr", "bicubic", "mean"]

    plan = s.plan_export(tmp_path / "out", keys=["s2"])
    img = next(im for im in plan.job.images if im.kind == "mean")
    assert [im.key for im in plan.job.images] == ["input_crop", "input_lr_16x16", "reference_hr", "bicubic",
                                                   "mean_estimate", "s2_seed4"]
    assert img.generated and "estimate" in img.caption and "not a sample" in img.caption
    assert img.info["sigma"] == 348.0 and img.info["estimate"] == MEAN_NOTE and "seed" not in img.info
    res = write_export(plan)
    assert (res.folder / "GENERATED_mean_estimate.png").is_file()
    rec = json.loads((res.folder / "run.json").read_text())
    out = next(o for o in rec["outputs"] if o["kind"] == "mean")
    assert out["generated"] and out["path"] == "GENERATED_mean_estimate.png" and "psnr" in out
    assert [o["seed"] for o in rec["outputs"] if o["kind"] == "sample"] == [4]
    html = (res.folder / "report.html").read_text(encoding="utf-8")
    assert "ESTIMATE, NOT A SAMPLE" in html
