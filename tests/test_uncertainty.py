"""core.uncertainty: the std map over K samples, its regions, the live map, the rendering and
the error metrics; and the map in the session's export and its HTML report."""

import json
import math

import numpy as np
import pytest
import torch

from sdesr_gui.core import selection, uncertainty as u
from sdesr_gui.core.errors import SdesrError
from sdesr_gui.core.metrics import spearman
from sdesr_gui.core.provenance import GENERATED_NOTICE, atomic_save_png, sha256_file


def c4(k: int) -> float:
    """E[sample std (ddof=1)] / sigma for k normal draws."""
    return math.sqrt(2.0 / (k - 1)) * math.exp(math.lgamma(k / 2) - math.lgamma((k - 1) / 2))


def gaussian_posterior(k: int, seed: int = 0, size: int = 128):
    """A toy posterior with a known per-pixel std: mu in [0.4, 0.6], sigma from 0.01 (left) to
    0.08 (right) times a vertical ripple; K samples and one 'true' HR drawn from N(mu, sigma^2)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    mu = 0.5 + 0.1 * np.sin(6 * xx) * np.cos(4 * yy)
    sigma = (0.01 + 0.07 * xx) * (0.75 + 0.25 * np.cos(5 * yy))
    mu3, sig3 = mu[None, :, :, None], sigma[None, :, :, None]
    samples = mu3 + sig3 * g.standard_normal((k, size, size, 3))
    hr = mu3[0] + sig3[0] * g.standard_normal((size, size, 3))
    assert samples.min() > 0 and samples.max() < 1  # no clipping: the posterior is exactly Gaussian
    return samples, hr, mu, sigma


def to_tensor(stack: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------
# the map
# ------------------------------------------------------------------------------------------
def test_std_map_recovers_a_known_gaussian_posterior_within_sampling_error():
    k = 32
    samples, _, mu, sigma = gaussian_posterior(k)
    m = u.uncertainty_map(to_tensor(samples))
    assert m.samples == k and m.std.dtype == np.float32 and m.std.shape == (128, 128)
    assert m.sample_mean.shape == (128, 128, 3) and m.sample_mean.dtype == np.float32
    z = m.std.astype(np.float64) / sigma
    # per pixel: the mean of 3 channel stds, each with relative sd ~ sqrt(1 - c4^2)
    se_pixel = math.sqrt(1 - c4(k) ** 2) / math.sqrt(3)
    se_mean = se_pixel / math.sqrt(z.size)
    assert abs(z.mean() - c4(k)) < 4 * se_mean  # unbiased variance: E[s] = c4(K) sigma
    assert abs(z.mean() - c4(k) * math.sqrt((k - 1) / k)) > 10 * se_mean  # ddof=0 would be detectably low
    assert np.mean(np.abs(z - c4(k)) > 4 * se_pixel) < 0.002  # every pixel within sampling error
    assert np.abs(m.sample_mean - mu[:, :, None]).max() < 5 * sigma.max() / math.sqrt(k)


def test_the_unbiased_estimator_is_used_and_uint8_samples_agree():
    two = np.zeros((2, 128, 128, 3), np.uint8)
    two[1] = 255
    m = u.uncertainty_map(two)
    assert np.allclose(m.std, math.sqrt(0.5))  # ddof=1: std of {0, 1} is 0.707, not 0.5
    assert m.share_above == 1.0 and m.sample_rms == pytest.approx([0.5, 0.5])
    samples, *_ = gaussian_posterior(6, seed=1)
    u8 = np.round(samples * 255).astype(np.uint8)
    a, b = u.uncertainty_map(to_tensor(samples)), u.uncertainty_map(u8)
    assert np.abs(a.std - b.std).max() < 0.004  # quantisation only
    assert u.uncertainty_map(list(u8)).std.tobytes() == b.std.tobytes()
    want = np.sqrt(((samples - samples.mean(0)) ** 2).reshape(6, -1).mean(1))
    assert a.sample_rms == pytest.approx(want, rel=1e-5)


def test_one_sample_claims_no_map():
    one = torch.rand(1, 3, 128, 128)
    for bad in (one, one[0], np.zeros((1, 128, 128, 3), np.uint8), [np.zeros((128, 128, 3), np.uint8)], []):
        with pytest.raises(u.NotEnoughSamples) as e:
            u.uncertainty_map(bad)
        assert isinstance(e.value, SdesrError) and str(e.value).count(".") == 1 and "two samples" in str(e.value)
    assert u.running_std_map(one) is None
    rec = u.no_map_record(1)
    assert rec["map"] is False and rec["samples"] == 1 and "no map (K = 1)" in rec["note"]
    json.dumps(rec)


def test_record_block_is_json_with_threshold_regions_and_distances():
    samples, *_ = gaussian_posterior(4, seed=2)
    m = u.uncertainty_map(to_tensor(samples))
    d = json.loads(json.dumps(m.to_dict()))
    assert d["map"] is True and d["samples"] == 4 and d["threshold"] == u.DEFAULT_THRESHOLD == 0.1
    assert "0.1" in d["threshold_reason"] and "ddof=1" in d["what"]
    assert set(d["regions"]) == {"eyes", "nose", "mouth", "jaw", "hair_background"}
    assert len(d["sample_rms_to_mean"]) == 4
    face = u.region_masks()["face"]
    assert d["share_above_threshold"] == pytest.approx(float((m.std[face] > 0.1).mean()), abs=1e-6)
    assert d["mean_std"] == pytest.approx(float(m.std.mean()), abs=1e-6)
    # the right half of the toy face is the uncertain one; the regions see it
    assert d["regions"]["eyes"]["mean_std"] == pytest.approx(float(m.std[u.region_masks()["eyes"]].mean()), abs=1e-6)


# ------------------------------------------------------------------------------------------
# regions
# ------------------------------------------------------------------------------------------
def test_region_boxes_lie_inside_the_frame_and_around_their_landmarks():
    from sdesr_gui.core.faces import TEMPLATE_LANDMARKS

    fx0, fy0, fx1, fy1 = u.FACE_BOX
    assert 0 <= fx0 < fx1 <= 128 and 0 <= fy0 < fy1 <= 128
    boxes = {n: r.boxes for n, r in u.REGIONS.items() if not r.outside}
    for name, bs in boxes.items():
        for x0, y0, x1, y1 in bs:
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128, name
            assert fx0 <= x0 and x1 <= fx1 and fy0 <= y0 and y1 <= fy1, name  # inside the face box

    def inside(p, bs):
        return any(b[0] <= p[0] < b[2] and b[1] <= p[1] < b[3] for b in bs)

    le, re_, nose, ml, mr = TEMPLATE_LANDMARKS
    assert inside(le, boxes["eyes"]) and inside(re_, boxes["eyes"]) and inside(nose, boxes["nose"])
    assert inside(ml, boxes["mouth"]) and inside(mr, boxes["mouth"])
    masks = u.region_masks()
    parts = [masks[n] for n in boxes]
    assert sum(p.astype(int) for p in parts).max() == 1  # face regions do not overlap
    assert np.array_equal(masks["hair_background"], ~masks["face"])
    small = u.region_masks(32, 32)  # a smaller map scales the boxes
    assert small["eyes"].shape == (32, 32) and 0 < small["eyes"].sum() < masks["eyes"].sum()


# ------------------------------------------------------------------------------------------
# the live map
# ------------------------------------------------------------------------------------------
def test_running_map_is_the_same_std():
    torch.manual_seed(0)
    den = torch.rand(8, 3, 128, 128) * 1.2 - 0.1  # denoised estimates may leave [0, 1]
    live = u.running_std_map(den)
    assert live.dtype == np.float32 and live.shape == (128, 128)
    assert np.allclose(live, u.uncertainty_map(den.clamp(0, 1)).std, atol=1e-5)
    assert np.allclose(u.running_std_map(den, 1.3), u.uncertainty_map(den.clamp(0, 1), scale=1.3).std, atol=1e-5)


def test_a_model_scale_multiplies_the_std_and_is_recorded():
    samples, _, _, _ = gaussian_posterior(6, seed=2)
    plain, scaled = u.uncertainty_map(samples), u.uncertainty_map(samples, scale=1.25)
    assert np.allclose(scaled.std, 1.25 * plain.std, rtol=1e-6)
    assert scaled.share_above >= plain.share_above  # the threshold applies to the scaled std
    assert scaled.sample_rms == plain.sample_rms  # the samples' own distances are not scaled
    rec, rec1 = scaled.to_dict(), plain.to_dict()
    assert rec["std_scale"] == 1.25 and "calibration factor" in rec["std_scale_what"]
    assert rec1["std_scale"] == 1.0 and "std_scale_what" not in rec1
    with pytest.raises(ValueError):
        u.uncertainty_map(samples, scale=0.0)
    # the model's metadata: a usable factor, else 1
    assert u.model_scale({"uncertainty_scale": 1.2}) == 1.2
    for bad in ({}, None, {"uncertainty_scale": "x"}, {"uncertainty_scale": float("nan")},
                {"uncertainty_scale": -1}, {"uncertainty_scale": 50}):
        assert u.model_scale(bad) == 1.0


def test_the_session_map_uses_the_run_models_scale(tmp_path):
    from sdesr_gui.core.session import SamplerOutcome, Session

    s, u8 = _session_with_samples(tmp_path, 3)
    s.run.model["uncertainty_scale"] = 1.5
    assert np.allclose(s.uncertainty_map().std, 1.5 * u.uncertainty_map(u8).std, rtol=1e-6)
    # a new run's tile is made with the model's factor too
    sel = s.run.selection
    out = SamplerOutcome(u8, [0, 1, 2], sel.bicubic, [{} for _ in u8], {}, {"sampler": "fast", "h": 0.0, "seed": 0},
                         nfe=1, seconds=0.1, load_seconds=0.0, device="cpu")
    s.record_result(out, sel, s.plan_run().context, {"name": "m", "sha256": "b" * 64, "uncertainty_scale": 2.0}, None)
    tile = next(it for it in s.items if it.kind == "uncertainty")
    assert np.allclose(tile.uncertainty.std, 2.0 * u.uncertainty_map(u8).std, rtol=1e-6)
    assert tile.uncertainty.to_dict()["std_scale"] == 2.0 and "× 2 (the model's calibration factor)" in tile.note


# ------------------------------------------------------------------------------------------
# colours and images
# ------------------------------------------------------------------------------------------
def _srgb_to_linear(c):
    c = np.asarray(c, np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def test_colour_map_luminance_rises_monotonically():
    lut = u.colormap_lut(256)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.array_equal(lut[0], u.CIVIDIS_ANCHORS[0]) and np.array_equal(lut[-1], u.CIVIDIS_ANCHORS[-1])
    y = _srgb_to_linear(lut) @ np.array([0.2126, 0.7152, 0.0722])  # relative luminance (CIE Y)
    assert np.all(np.diff(y) > 0)
    luma = lut.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # what a greyscale print uses
    assert np.all(np.diff(luma) > 0)
    # the colorized ramp converted to greyscale by PIL is non-decreasing too
    from PIL import Image

    ramp = u.colorize(np.linspace(0, u.DEFAULT_VMAX, 256)[None, :].repeat(4, 0))
    grey = np.asarray(Image.fromarray(ramp).convert("L"))[0].astype(int)
    assert np.all(np.diff(grey) >= 0) and grey[-1] - grey[0] > 180


def test_colorize_clips_and_overlay_blends():
    s = np.array([[0.0, u.DEFAULT_VMAX / 2], [u.DEFAULT_VMAX, 5.0]], np.float32)
    c = u.colorize(s)
    assert c.shape == (2, 2, 3) and c.dtype == np.uint8
    assert np.array_equal(c[1, 0], c[1, 1]) and np.array_equal(c[0, 0], u.CIVIDIS_ANCHORS[0])
    img = np.full((4, 4, 3), 200, np.uint8)
    assert np.array_equal(u.overlay(img, s, 0.0), img)
    assert np.array_equal(u.overlay(img, s, 1.0), np.repeat(np.repeat(c, 2, 0), 2, 1))
    half = u.overlay(img, s, 0.5).astype(int)
    assert np.abs(half - (200 + np.repeat(np.repeat(c, 2, 0), 2, 1).astype(int)) / 2).max() <= 1
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="opacity"):
            u.overlay(img, s, bad)
    with pytest.raises(ValueError):
        u.overlay(np.zeros((5, 5, 3), np.uint8), s)


def test_rendered_map_has_the_map_a_scale_bar_and_words():
    samples, *_ = gaussian_posterior(4, seed=3)
    m = u.uncertainty_map(to_tensor(samples))
    img = u.render_std_map(m.std, samples=4)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[1] >= 256 + 2 and img.shape[0] > 256 + 40
    assert np.array_equal(img[0, 0], [255, 255, 255])  # white paper, black text: prints in greyscale
    # the map, enlarged twice, sits at the top left inside the margin
    m0 = 10
    assert np.array_equal(img[m0:m0 + 256:2, m0:m0 + 256:2], u.colorize(m.std))
    # the bar runs from the darkest to the brightest colour of the map
    bar = img[m0 + 256 + 8 + 6, m0:m0 + 256]
    assert np.array_equal(bar[0], u.CIVIDIS_ANCHORS[0]) and np.array_equal(bar[-1], u.CIVIDIS_ANCHORS[-1])
    below = img[m0 + 256 + 8 + 12 + 6:]
    assert (below.min(axis=2) < 60).sum() > 200  # there is text under the bar
    with pytest.raises(ValueError):
        u.render_std_map(np.zeros((2, 2, 2)))


def test_std_npy_is_float32_and_hashed(tmp_path):
    std = np.random.default_rng(0).random((128, 128))
    p = tmp_path / "x_std.npy"
    digest = u.save_std_npy(p, std)
    back = np.load(p)
    assert back.dtype == np.float32 and back.shape == (128, 128) and np.allclose(back, std)
    assert digest == sha256_file(p)


# ------------------------------------------------------------------------------------------
# error metrics
# ------------------------------------------------------------------------------------------
def test_spearman_matches_the_textbook():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    g = np.random.default_rng(0)
    a, b = g.integers(0, 5, 50), g.integers(0, 5, 50)  # with ties
    stats = pytest.importorskip("scipy.stats")
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def test_a_calibrated_posterior_gives_ratio_one_and_ranks_the_error():
    """Estimate = the posterior mean, HR drawn from the same Gaussian: the std predicts the
    error (ratio about 1) and finds where it is (high patch Spearman)."""
    samples, hr, mu, sigma = gaussian_posterior(16, seed=4)
    m = u.uncertainty_map(to_tensor(samples))
    est = np.repeat(mu[:, :, None], 3, axis=2)
    ratio = u.calibration_ratio(est, hr, m.std)
    assert 0.95 < ratio < 1.08
    assert u.rms_error(est, hr) == pytest.approx(float(np.sqrt(np.mean((est - hr) ** 2))), rel=1e-6)
    rho = u.patch_spearman(est, hr, m.std)
    assert rho > 0.8
    # an over-confident map (std too small by 2) reads as ratio 2
    assert u.calibration_ratio(est, hr, m.std / 2) == pytest.approx(2 * ratio, rel=1e-6)
    d = u.compare_with_reference(torch.from_numpy(est).permute(2, 0, 1)[None], hr, m)
    assert d["ratio"] == pytest.approx(ratio, abs=1e-5) and d["spearman_patch"] == pytest.approx(rho, abs=1e-5)
    assert d["patch"] == 8 and set(d["regions"]) == set(u.REGIONS)
    assert all(0.8 < r["ratio"] < 1.25 for r in d["regions"].values())
    assert u.patch_means(np.arange(16.0).reshape(4, 4), 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]


# ------------------------------------------------------------------------------------------
# the session's export and the HTML report
# ------------------------------------------------------------------------------------------
def _session_with_samples(tmp_path, n: int, reference: bool = True):
    from sdesr_gui.core.session import SamplerOutcome, Session

    src = tmp_path / "evidence" / "cam.png"
    src.parent.mkdir()
    samples, hr, mu, _ = gaussian_posterior(n, seed=5)
    u8 = [np.round(x * 255).astype(np.uint8) for x in samples]
    hr8 = np.round(hr * 255).astype(np.uint8)
    atomic_save_png(src, hr8)
    s = Session()
    s.set_input(src, "still")
    sel = selection.whole_image(hr8)
    s.set_selection(sel, {"index": 0})
    plan = s.plan_run()
    if not reference:
        plan.context.reference = None
    mean = np.round(np.repeat(mu[:, :, None], 3, axis=2) * 255).astype(np.uint8)
    settings = {"sampler": "fast", "h": 0.0, "seed": 0, "mean_estimate": {"what": "an estimate, not a sample"}}
    out = SamplerOutcome(u8, list(range(n)), sel.bicubic, [{} for _ in range(n)], {}, settings, nfe=1, seconds=0.1,
                         load_seconds=0.0, device="cpu", mean=mean)
    s.record_result(out, sel, plan.context, {"name": "m", "sha256": "a" * 64}, None)
    return s, u8


def test_session_map_over_its_samples(tmp_path):
    s, u8 = _session_with_samples(tmp_path, 3)
    m = s.uncertainty_map()
    assert m.samples == 3 and np.array_equal(m.std, u.uncertainty_map(u8).std)
    assert s.uncertainty_map(["s1", "s3"]).samples == 2
    assert s.uncertainty_map(["s2"]) is None  # one sample: no map


def test_export_with_two_samples_has_the_map_its_scale_and_the_region_table(tmp_path):
    from sdesr_gui.core.session import write_export

    s, u8 = _session_with_samples(tmp_path, 3)
    plan = s.plan_export(tmp_path / "out", keys=["s1", "s3"])
    img = next(im for im in plan.job.images if im.kind == "uncertainty")
    assert img.generated and img.image.shape[0] > 256
    assert plan.job.uncertainty["samples"] == 2 and plan.job.uncertainty["seeds"] == [0, 2]
    res = write_export(plan)
    f = res.folder / "GENERATED_uncertainty_map.png"
    from PIL import Image

    assert Image.open(f).text["Comment"] == GENERATED_NOTICE
    rec = json.loads((res.folder / "run.json").read_text())
    block = rec["uncertainty"]
    assert block["map"] is True and block["threshold"] == 0.1 and set(block["regions"]) == set(u.REGIONS)
    assert block["mean_std"] == pytest.approx(float(u.uncertainty_map([u8[0], u8[2]]).std.mean()), abs=1e-6)
    assert 0.5 < block["against_hr"]["ratio"] < 2 and "spearman_patch" in block["against_hr"]
    out = next(o for o in rec["outputs"] if o["kind"] == "uncertainty")
    assert out["generated"] and out["sha256"] == sha256_file(f) and out["seeds"] == [0, 2]
    html = (res.folder / "report.html").read_text(encoding="utf-8")
    assert "What is invented" in html and "bright = samples disagree = invented detail" in html
    assert "data-file='GENERATED_uncertainty_map.png'" in html
    assert "data-file='GENERATED_mean_estimate.png'" in html  # the mean estimate beside the map
    for name in u.REGIONS:
        assert f"data-region='{name}'" in html
    assert "RMS error of the mean estimate" in html


def test_export_with_one_sample_says_no_map(tmp_path):
    from sdesr_gui.core.session import write_export

    s, _ = _session_with_samples(tmp_path, 2, reference=False)
    plan = s.plan_export(tmp_path / "out", keys=["s2"])
    assert not any(im.kind == "uncertainty" for im in plan.job.images)
    res = write_export(plan)
    assert not (res.folder / "GENERATED_uncertainty_map.png").exists()
    rec = json.loads((res.folder / "run.json").read_text())
    assert rec["uncertainty"]["map"] is False and rec["uncertainty"]["samples"] == 1
    html = (res.folder / "report.html").read_text(encoding="utf-8")
    assert "No map" in html and "id='regions'" not in html
    both = write_export(s.plan_export(tmp_path / "out2"))  # no reference: a map but no error against HR
    block = json.loads((both.folder / "run.json").read_text())["uncertainty"]
    assert block["map"] is True and "against_hr" not in block
