"""Every metric explains itself: one table (core.metrics.METRICS) gives each number its unit,
direction and one line, and every record, table and report that shows a metric carries it.

The coverage tests collect the numbers each producer writes; a new metric written without a row
in METRICS (or without being named here as a setting or count, not a metric) fails them."""

from __future__ import annotations

import html
import json
import numbers
from dataclasses import dataclass, replace

import numpy as np
import pytest
from PIL import Image

from cli_util import run
from sdesr_gui.core import evaluation, faces, metrics, report, uncertainty
from sdesr_gui.core.metrics import METRICS

#: numeric keys of the records that are settings, counts or identifiers, not metrics
NOT_METRICS = {"seed", "seeds", "index", "samples", "size", "threshold", "scale_max", "patch", "pixels",
               "favourite", "generated", "boxes", "shape", "n"}


def numeric_keys(obj) -> set[str]:
    """Keys anywhere in ``obj`` whose value is a number or a list of numbers."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            vals = v if isinstance(v, (list, tuple)) else [v]
            if vals and all(isinstance(x, numbers.Number) and not isinstance(x, bool) for x in vals):
                out.add(k)
            out |= numeric_keys(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out |= numeric_keys(v)
    return out


def unexplained(obj) -> set[str]:
    return numeric_keys(obj) - NOT_METRICS - set(METRICS)


# ------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------
def test_every_row_has_a_unit_a_direction_and_a_line():
    for key, m in METRICS.items():
        assert m.label and m.range and m.gist and m.line.endswith((".", "?")), key
        assert m.better in ("higher", "lower", "near 1"), key
        assert metrics.format_metric(key, 0.5)  # the format spec works
    assert METRICS["psnr"].unit == "dB" and METRICS["psnr"].better == "higher"
    assert METRICS["ssim"].better == "higher" and METRICS["cs"].better == "higher"
    assert "-1 to 1" in METRICS["cs"].range and "dlib" in METRICS["cs"].line
    assert METRICS["ratio"].better == "near 1" and METRICS["spearman_patch"].better == "higher"
    c = METRICS["consistency"]  # the issue: an MSE against the LR, lower is better, 0-255 units
    assert c.better == "lower" and "0–255" in c.unit and "16×16" in c.line and "LR input" in c.line


def test_consistency_is_what_its_line_says():
    """MSE on the 0-255 scale between the SR downsampled to the LR size and the LR."""
    rng = np.random.default_rng(0)
    sr = faces.to_tensor(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    lr = faces.to_tensor(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    want = float((((faces.downsample(sr, 16) - lr) * 255.0) ** 2).mean())
    assert float(metrics.consistency(sr, lr)[0]) == pytest.approx(want, rel=1e-5)


def test_formatting_carries_unit_and_direction():
    assert metrics.format_metric("psnr", 24.104) == "PSNR 24.10 dB ↑"
    assert metrics.format_metric("ssim", 0.7123) == "SSIM 0.712 ↑"
    assert metrics.format_metric("consistency", 2.314) == "consistency 2.31 (0–255)² ↓"
    assert metrics.format_metric("consistency", 2.314, long=True) == \
        "consistency 2.31 (0–255)² (MSE vs the LR input, 0–255 scale; lower is better)"
    assert metrics.format_metric("share_above_threshold", 0.123) == "share above threshold 12% ↓"
    assert metrics.format_metric("ratio", 1.1) == "calibration ratio 1.10 →1"
    assert metrics.format_value("sample_rms_to_mean", [0.1, 0.2]) == "0.100, 0.200"
    assert metrics.format_value("psnr", None) == "–" and metrics.format_value("psnr", float("nan")) == "–"
    assert metrics.metric_header("psnr") == "PSNR [dB] ↑" and metrics.metric_header("cs") == "CS ↑"
    tip = metrics.metric_tooltip("consistency")
    assert "Lower is better" in tip and METRICS["consistency"].line in tip
    with pytest.raises(KeyError, match="METRICS"):
        metrics.format_metric("lpips", 0.1)


def test_legend_and_the_keys_it_explains():
    rec = {"outputs": [{"psnr": 20.0, "seed": 1}], "uncertainty": {"against_hr": {"ratio": 1.0}},
           "sampler": {"steps": 3}}
    assert metrics.metric_keys_in(rec) == ["psnr", "ratio"]
    leg = metrics.metric_legend(["consistency", "psnr", "psnr"])
    assert list(leg) == ["consistency", "psnr"]
    assert leg["consistency"] == {"label": "consistency", "unit": "squared 8-bit grey levels, (0–255)²",
                                  "better": "lower", "range": METRICS["consistency"].range,
                                  "what": METRICS["consistency"].line}
    assert leg["psnr"]["unit"] == "dB (decibel)" and metrics.metric_legend()["ssim"]["unit"] == "none"
    assert set(metrics.metric_legend()) == set(METRICS)
    json.dumps(metrics.metric_legend())  # JSON-ready


# ------------------------------------------------------------------------------------------
# every producer's metrics have a row
# ------------------------------------------------------------------------------------------
def test_per_image_metrics_all_have_rows():
    rng = np.random.default_rng(1)
    hr = faces.frames_to_tensor([rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)])
    lr = faces.degrade(hr)
    keys = set(metrics.image_metrics(faces.upsample(lr), lr, hr)[0])
    assert keys == {"consistency", "psnr", "ssim"} and keys <= set(METRICS)


def test_uncertainty_block_numbers_all_have_rows():
    rng = np.random.default_rng(2)
    s = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
    umap = uncertainty.uncertainty_map(s)
    block = umap.to_dict()
    block["against_hr"] = uncertainty.compare_with_reference(s[0], s[1], umap)
    assert not unexplained(block), unexplained(block)
    assert {"mean_std", "share_above_threshold", "rms_error", "ratio", "spearman_patch"} <= \
        set(metrics.metric_keys_in(block))


@dataclass
class _Settings:
    seed: int = 0
    samples: int = 1


class _Stub:
    """Stands in for an Enhancer: the 'sampler' is bicubic plus a little noise."""

    lr_size = 16  # an 8x model

    def run_many(self, lr, st, cancel=None, seeds=None):
        import torch

        g = torch.Generator().manual_seed(st.seed if seeds is None else seeds[0])
        return (faces.upsample(lr) + 0.01 * torch.randn(lr.shape[0], 3, 128, 128, generator=g)).clamp(0, 1)


def test_evaluation_summary_metrics_all_have_rows_and_the_table_says_units():
    rng = np.random.default_rng(3)
    hr = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    res = evaluation.evaluate(_Stub(), hr, {"stub": _Settings()}, batch=2,
                              embed_fn=lambda x: x.flatten(1)[:, :64])
    summary = res.summary()
    for method, d in summary.items():
        assert set(d) <= set(METRICS), (method, set(d) - set(METRICS))
    assert metrics.metric_keys_in(summary) == ["psnr", "ssim", "consistency", "cs"]
    table = evaluation.format_table(summary)
    head = table.splitlines()[0]
    assert head.index("PSNR [dB] ↑") < head.index("SSIM ↑") < head.index("consistency (0–255)² ↓") \
        < head.index("CS ↑")  # column order kept
    assert "lower is better" in table and "MSE vs the LR input" in table


# ------------------------------------------------------------------------------------------
# the records carry the legend
# ------------------------------------------------------------------------------------------
def test_enhance_record_has_a_legend_for_every_number(tmp_path, astronaut_face, tiny_weights, capsys):
    src = tmp_path / "evidence"
    src.mkdir()
    Image.fromarray(astronaut_face).save(src / "face.png")
    code, _, err = run(["enhance", src / "face.png", "--out", tmp_path / "out", "--weights", tiny_weights["score"],
                        "--samples", "2", "--steps", "2", "--quiet"], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "out" / "face.json").read_text())
    shown = {"outputs": rec["outputs"], "uncertainty": rec["uncertainty"]}
    assert not unexplained(shown), unexplained(shown)
    legend = rec["metric_legend"]
    assert set(legend) == set(metrics.metric_keys_in(shown)) >= {"psnr", "ssim", "consistency", "ratio"}
    assert legend == metrics.metric_legend(legend)
    assert legend["consistency"]["better"] == "lower" and legend["psnr"]["unit"] == "dB (decibel)"
    assert all("consistency" in o for o in rec["outputs"] if o["kind"] in ("sample", "mean", "bicubic"))


def test_evaluate_json_has_the_legend(tmp_path, astronaut_face, tiny_weights, capsys):
    d = tmp_path / "hr"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(astronaut_face, i * 5, axis=1)).save(d / f"f{i}.png")
    code, out, err = run(["evaluate", d, "--weights", tiny_weights["score"], "--steps", "2", "--batch", "2",
                          "--json", tmp_path / "r.json", "--quiet"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["metric_legend"]) == {"psnr", "ssim", "consistency"}  # no embedder given: no CS
    assert rep["summary"]["bicubic"]["psnr"]["n"] == 2  # the keys users read are unchanged
    assert "PSNR [dB] ↑" in out and "consistency (0–255)² ↓" in out


def _export_job(with_map: bool):
    rng = np.random.default_rng(4)
    s = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    imgs = [report.ExportImage("bicubic", s[0], "bicubic", False, "Bicubic",
                               {"consistency": 27.6, "psnr": 21.1, "ssim": 0.55}),
            report.ExportImage("s1_seed5", s[1], "sample", True, "Sample 1",
                               {"seed": 5, "consistency": 1.5, "psnr": 22.3, "ssim": 0.6, "cs": 0.71})]
    block = None
    if with_map:
        umap = uncertainty.uncertainty_map(s)
        block = umap.to_dict()
        block["against_hr"] = uncertainty.compare_with_reference(s[0], s[1], umap)
    return report.ExportJob(images=imgs, uncertainty=block)


def test_export_record_and_report_explain_every_metric(tmp_path):
    res = report.export_run(_export_job(with_map=True), tmp_path, folder_name="run")
    rec = json.loads((res.folder / "run.json").read_text())
    shown = {"outputs": rec["outputs"], "uncertainty": rec["uncertainty"]}
    assert not unexplained(shown), unexplained(shown)
    assert set(rec["metric_legend"]) == set(metrics.metric_keys_in(shown))
    assert rec["outputs"][1]["psnr"] == 22.3  # the values stay where they were
    page = (res.folder / "report.html").read_text()
    # the metrics table: units and arrows in the headers, units with the values
    table = page[page.index("<table id='metrics-table'>"):]
    table = table[:table.index("</table>")]
    for head in ("consistency (0–255)² ↓", "PSNR [dB] ↑", "SSIM ↑", "CS ↑"):
        assert head in table
    assert "22.30 dB" in table and "1.50 (0–255)²" in table
    # the legend under it: one row per metric of the record, with its line and direction
    legend = page[page.index("<table id='metric-legend'>"):]
    legend = legend[:legend.index("</table>")]
    for key in rec["metric_legend"]:
        assert f"data-metric='{key}'" in legend
    assert "lower is better" in legend and "higher is better" in legend
    assert html.escape(METRICS["consistency"].line) in legend
    # the captions and the uncertainty numbers carry units and arrows too
    assert "PSNR 22.30 dB ↑" in page and "calibration ratio (" in page and "patch Spearman (" in page
    assert "<th title=" in page[page.index("<table id='regions'>"):]


def test_report_without_reference_says_so(tmp_path):
    job = _export_job(with_map=False)
    job.images = [replace(im, info={k: v for k, v in im.info.items() if k in ("seed", "consistency")})
                  for im in job.images]
    res = report.export_run(job, tmp_path, folder_name="run")
    page = (res.folder / "report.html").read_text()
    assert "No reference HR was known" in page and "data-metric='consistency'" in page
    assert list(json.loads((res.folder / "run.json").read_text())["metric_legend"]) == ["consistency"]
