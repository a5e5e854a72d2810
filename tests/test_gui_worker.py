"""The sampler worker thread: throttled live frames, results, cancel within one step, errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")

from sdesr_gui.core.enhance import Enhancer, SamplerSettings  # noqa: E402
from sdesr_gui.core.models import ScoreNetConfig, ScoreUNet  # noqa: E402
from sdesr_gui.core.sde import VESDE  # noqa: E402
from sdesr_gui.gui.worker import (FunctionJob, PreviewThrottle, SamplerJob, SamplerRequest,  # noqa: E402
                                  user_message)


@pytest.fixture(scope="module")
def enhancer():
    torch.manual_seed(0)
    cfg = ScoreNetConfig(channels=(4, 4, 4, 4), blocks_per_level=1, attn_resolutions=(), emb_dim=8, attn_heads=1)
    return Enhancer(ScoreUNet(cfg), VESDE(), model_info={"name": "tiny"})


def lr_face():
    return np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)


def test_throttle_gives_at_least_5_per_second_without_flooding():
    now = [0.0]
    th = PreviewThrottle(1 / 8, clock=lambda: now[0])
    shown = []
    total = 200  # 200 steps of 5 ms: one second of sampling
    for step in range(1, total + 1):
        now[0] += 0.005
        if th.ready(step, total):
            shown.append(step)
    assert shown[0] == 1 and shown[-1] == total
    assert 5 <= len(shown) <= 10
    # slow steps: every step is shown
    th = PreviewThrottle(1 / 8, clock=lambda: now[0])
    shown = []
    for step in range(1, 6):
        now[0] += 0.5
        shown.append(th.ready(step, 5))
    assert all(shown)


def test_sampler_job_emits_progress_previews_and_result(qtbot, enhancer):
    s = SamplerSettings(sampler="fast", steps=6, samples=3, seed=11)
    ref = np.full((128, 128, 3), 128, np.uint8)
    job = SamplerJob(SamplerRequest("", None, "cpu", lr_face(), s, reference=ref, enhancer=enhancer),
                     preview_hz=1000.0)
    previews, progress = [], []
    job.preview.connect(previews.append)
    job.progress.connect(lambda *a: progress.append(a))
    with qtbot.waitSignal(job.done, timeout=120_000) as blocker:
        job.start()
    job.wait()
    out = blocker.args[0]
    assert [p.step for p in previews] == list(range(1, 7))  # unthrottled here: every step
    assert len(previews[0].x) == 3 and previews[0].x[0].shape == (128, 128, 3)
    assert previews[0].denoised[0].dtype == np.uint8
    # the live map of where the 3 samples' denoised estimates disagree, made in the worker thread
    from sdesr_gui.core.uncertainty import colorize

    assert all(p.samples == 3 and p.std.shape == (128, 128) and p.std.dtype == np.float32 for p in previews)
    assert np.array_equal(previews[-1].std_rgb, colorize(previews[-1].std))
    assert progress[-1][0] == progress[-1][1] == 6
    assert out.seeds == [11, 12, 13] and len(out.samples) == 3
    assert {"consistency", "psnr", "ssim"} <= set(out.metrics[0]) and "psnr" in out.bicubic_metrics
    assert out.settings["steps"] == 6 and out.nfe == 6
    # the run's mean estimate comes along, measured like the bicubic baseline (not a sample)
    assert out.mean.shape == (128, 128, 3) and out.mean.dtype == np.uint8
    assert set(out.mean_metrics) == {"consistency", "psnr", "ssim"}
    assert out.settings["mean_estimate"]["sigma"] == 348.0 and len(out.samples) == 3


def test_live_map_carries_the_models_scale(qtbot, enhancer):
    s = SamplerSettings(sampler="fast", steps=2, samples=2, seed=4)
    stds = []
    for scale in (None, 2.0):
        if scale is not None:
            enhancer.model_info["uncertainty_scale"] = scale
        job = SamplerJob(SamplerRequest("", None, "cpu", lr_face(), s, enhancer=enhancer), preview_hz=1000.0)
        previews = []
        job.preview.connect(previews.append)
        with qtbot.waitSignal(job.done, timeout=120_000):
            job.start()
        job.wait()
        stds.append(previews[-1].std)
    enhancer.model_info.pop("uncertainty_scale")
    assert np.allclose(stds[1], 2.0 * stds[0], rtol=1e-5)  # same seeds: the same samples, the map doubled


def test_cancel_takes_effect_within_one_step(qtbot, enhancer):
    s = SamplerSettings(sampler="pc", steps=5000, corrector_steps=0, samples=1)
    job = SamplerJob(SamplerRequest("", None, "cpu", lr_face(), s, enhancer=enhancer))
    got = []
    job.done.connect(got.append)
    job.start()
    qtbot.waitUntil(lambda: job.last_step >= 3, timeout=120_000)
    with qtbot.waitSignal(job.cancelled, timeout=60_000):
        job.cancel()
        at = job.last_step
    job.wait()
    assert job.last_step <= at + 1 and not got


def test_errors_arrive_as_one_sentence(qtbot, tmp_path):
    bad = tmp_path / "nope.safetensors"
    job = SamplerJob(SamplerRequest(str(bad), None, "cpu", lr_face(), SamplerSettings(steps=2)))
    with qtbot.waitSignal(job.failed, timeout=60_000) as blocker:
        job.start()
    job.wait()
    msg = blocker.args[0]
    assert msg.endswith(".") and "\n" not in msg

    def boom(report, cancel):
        raise KeyError("x")

    fj = FunctionJob(boom, "Indexing")
    with qtbot.waitSignal(fj.failed, timeout=10_000) as blocker:
        fj.start()
    fj.wait()
    assert blocker.args[0].startswith("Indexing failed unexpectedly")
    assert user_message(ValueError("The number of samples must be between 1 and 64"), "x") == \
        "The number of samples must be between 1 and 64."
