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


def still_session(tmp_path):
    """A session with a still input in its own 'evidence' folder and its whole image selected:
    (session, selection, run plan)."""
    src = tmp_path / "evidence" / "cam.png"
    src.parent.mkdir()
    atomic_save_png(src, face(0))
    s = Session()
    s.set_input(src, "still")
    sel = selection.whole_image(face(5))
    s.set_selection(sel, {"index": 0})
    return s, sel, s.plan_run()


def test_a_run_with_a_mean_estimate_shows_and_exports_it(tmp_path):
    """The mean estimate is its own tile beside bicubic, never a sample; kept across re-runs,
    measured against a new reference and exported as generated, labelled as an estimate."""
    s, sel, plan = still_session(tmp_path)
    settings = {"sampler": "fast", "sde": "ve", "h": 0.0, "seed": 3, "mean_estimate": MEAN_RECORD}
    mean = face(50)
    s.record_result(outcome(sel, [3, 4], settings, mean=mean), sel, plan.context, MODEL, None)
    assert [it.key for it in s.items] == ["lr", "bicubic", "mean", "uncertainty", "reference", "s1", "s2"]
    m = s.item("mean")
    assert m.kind == "mean" and m.title == "Mean estimate" and m.seed is None and m.generated
    assert m.note == MEAN_NOTE and "sample" not in m.title.lower() and m.image is mean
    assert m.metrics == {"consistency": 0.25}
    assert [it.key for it in s.samples()] == ["s1", "s2"]  # never matched or exported as a sample
    assert s.export_keys() == ["s1", "s2"]

    # a re-run of one sample keeps the mean (one more sample, nothing else changes)
    again = s.plan_run("s1")
    s.record_result(outcome(sel, [3], dict(settings, sde="vp"), tag=again.tag, mean=face(51)), sel, None, MODEL, None)
    assert [it.key for it in s.items] == ["lr", "bicubic", "mean", "uncertainty", "reference", "s1", "s2", "s3"]
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


def test_the_map_of_the_run_samples_is_an_item_beside_the_mean_and_follows_re_runs(tmp_path):
    """K >= 2: an "uncertainty" item right after the mean estimate, its numbers those of
    core.uncertainty over the run's current samples (a re-run adds one: the map is made again);
    K = 1: no map item; never a sample, never exported as one."""
    from sdesr_gui.core import uncertainty as u

    s = Session()
    s.set_input(tmp_path / "cam.png", "still")
    sel = selection.whole_image(face(5))
    s.set_selection(sel, {"index": 0})
    assert s.uncertainty is None
    plan = s.plan_run()
    s.record_result(outcome(sel, [3], mean=face(50)), sel, plan.context, MODEL, None)
    assert s.uncertainty is None and s.item("uncertainty") is None  # one sample: no map is claimed
    s.record_result(outcome(sel, [3, 4, 5], mean=face(50)), sel, plan.context, MODEL, None)
    keys = [it.key for it in s.items]
    assert keys.index("uncertainty") == keys.index("mean") + 1
    item = s.item("uncertainty")
    assert item.kind == "uncertainty" and not item.generated and item.seed is None
    assert u.CAPTION in item.note and item.image.shape == (128, 128, 3) and item.image.dtype == np.uint8
    imgs = [it.image for it in s.samples()]
    assert np.array_equal(s.uncertainty.std, u.uncertainty_map(imgs).std) and s.uncertainty.samples == 3
    assert np.array_equal(item.image, u.colorize(s.uncertainty.std, u.DEFAULT_VMAX))
    assert s.uncertainty is item.uncertainty and [it.key for it in s.samples()] == ["s1", "s2", "s3"]

    again = s.plan_run("s2")
    s.record_result(outcome(sel, [9], tag=again.tag), sel, None, MODEL, None)
    assert s.uncertainty.samples == 4 and [it.kind for it in s.items].count("uncertainty") == 1
    assert np.array_equal(s.uncertainty.std, u.uncertainty_map([it.image for it in s.samples()]).std)
    s.set_metrics("cs", {"mean": 0.5})
    s.set_reference(np.full((128, 128, 3), 90, np.uint8), "ref")  # the run's items are rebuilt: the map stays
    assert s.uncertainty.samples == 4
    assert [im.kind for im in s.plan_export(tmp_path / "out").job.images].count("sample") == 4


def test_region_agreement_says_where_the_samples_agree_in_words():
    """Each region of the map gets a verdict an analyst can read, from its share above the threshold."""
    from sdesr_gui.core import uncertainty as u

    base = np.full((128, 128, 3), 120, np.uint8)
    other = base.copy()
    masks = u.region_masks()
    other[masks["mouth"]] = 250  # the samples disagree on the whole mouth ...
    eyes = np.argwhere(masks["eyes"])
    for y, x in eyes[: len(eyes) // 10]:  # ... on a tenth of the eyes, and nowhere else
        other[y, x] = 250
    rows = {r["name"]: r for r in u.region_agreement(u.uncertainty_map([base, other]))}
    assert list(rows) == list(u.REGIONS)
    assert rows["mouth"]["verdict"] == "disagree" and rows["mouth"]["text"] == "mouth: samples disagree — detail invented"
    assert rows["nose"]["verdict"] == "agree" and rows["nose"]["text"] == "nose: samples agree"
    assert rows["eyes"]["verdict"] == "partly" and "partly disagree" in rows["eyes"]["text"]
    assert rows["hair_background"]["label"] == "hair and background" and rows["mouth"]["share_above"] == 1.0


def test_a_run_rescaled_for_its_model_still_belongs_to_the_selected_face():
    # the app rescales the selection for the model it picks (at_scale makes a new selection, with
    # the model's LR and why it was picked); the header must not say the face changed because of it
    img = face(3)
    s = Session()
    s.set_input(Path("/evidence/cam.png"), "still", {"size": [128, 128], "frame_count": 1})
    sel = selection.whole_image(img)
    s.set_selection(sel, {"index": 0, "count": 1})
    for scale in (8, 16):
        plan = s.plan_run().at_scale(scale, "picked for the test")
        assert plan.selection is not sel and plan.origin is sel
        s.record_result(outcome(plan.selection, [1]), plan.selection, plan.context, MODEL, None, origin=plan.origin)
        assert "changed" not in s.header
        assert s.run.selection.scale == scale and s.run.ran_on(sel)
    s.set_selection(sel, {"index": 0, "count": 1})  # the same face again: still its samples
    assert "changed" not in s.header
    other = selection.whole_image(face(4))
    s.set_selection(other, {"index": 0, "count": 1})
    assert "The selected face has changed" in s.header


def test_a_sample_that_does_not_match_its_input_is_flagged_in_tile_header_and_export(tmp_path):
    """A sample whose consistency with the LR is far worse than the run's mean estimate's (a
    diverged sampler) carries a warning: on its item, in the header and in the export (run.json
    and the report); a matching sample and a re-run that matches carry none."""
    s, sel, plan = still_session(tmp_path)
    settings = {"sampler": "pc", "sde": "ve", "h": 0.0, "seed": 3, "mean_estimate": MEAN_RECORD}
    out = outcome(sel, [3, 4], settings, mean=face(50))
    # mean estimate 2 grey levels RMS off the LR: the limit is 3 x 2 + 3 = 9 grey levels
    out.mean_metrics = {"consistency": 4.0}
    out.metrics = [{"consistency": 80.0}, {"consistency": 1200.0}]  # 8.9 (within) and 34.6 grey levels
    s.record_result(out, sel, plan.context, MODEL, None)
    assert s.item("s1").warning == ""
    assert "does not match the input" in s.item("s2").warning and "34.6" in s.item("s2").warning
    assert "Sample 2 does not match the input" in s.header and "Sample 1" not in s.header
    assert s.item("mean").warning == "" and s.item("bicubic").warning == ""

    again = s.plan_run("s2")
    rerun = outcome(sel, [4], dict(settings, sampler="fast"), tag=again.tag, mean=face(51))
    rerun.mean_metrics, rerun.metrics = {"consistency": 4.0}, [{"consistency": 5.0}]
    s.record_result(rerun, sel, None, MODEL, None)
    assert s.item("s3").warning == ""

    res = write_export(s.plan_export(tmp_path / "out", keys=["s1", "s2", "s3"]))
    rec = json.loads((res.folder / "run.json").read_text())
    warned = {o["sample"]: o.get("warning") for o in rec["outputs"] if o["kind"] == "sample"}
    assert warned["Sample 1"] is None and warned["Sample 3"] is None
    assert "Sample 2 does not match the input" in warned["Sample 2"]
    html = (res.folder / "report.html").read_text(encoding="utf-8")
    assert html.count("DOES NOT MATCH INPUT") == 1
