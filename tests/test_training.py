"""Training data and loops: detection/alignment, prepare_dataset, FaceDataset, the score and
attribute trainers (loss falls, exact resume, cancel, export round trip).

Everything runs on a handful of generated images in tmp_path with tiny networks (CPU, 1 thread).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from sdesr_gui.core import faces
from sdesr_gui.core.datasets import (
    MANIFEST_COLUMNS,
    FaceDataset,
    prepare_dataset,
    read_manifest,
    split_of,
)
from sdesr_gui.core.models import AttributeClassifier, ScoreUNet, load_checkpoint
from sdesr_gui.core.training import (
    AttrTrainConfig,
    _lr_at,
    _step_noise,
    ScoreTrainConfig,
    TrainingError,
    export_attributes,
    export_score,
    load_train_state,
    masked_bce,
    sample_sigmas,
    train_attributes,
    train_score,
)
from sdesr_gui.core.video import InputError

CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: tiny nets gain nothing from two, and a busy 2-core box loses a lot."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------
# generated data
# ------------------------------------------------------------------------------------------
def _face_like(seed: int, size=(178, 218)) -> Image.Image:
    """A cartoon face (oval, eyes, mouth) on a random background, CelebA-aligned size."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.normal(0, 3), h / 2 + 10 + rng.normal(0, 3)
    d.ellipse([cx - 50, cy - 65, cx + 50, cy + 65], fill=tuple(int(v) for v in rng.integers(120, 240, 3)))
    for ex in (-22, 22):
        d.ellipse([cx + ex - 8, cy - 25, cx + ex + 8, cy - 15], fill=(30, 30, 30))
    d.line([cx - 20, cy + 30, cx + 20, cy + 30], fill=(150, 40, 40), width=4)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.0))).astype(np.float32)
    arr += rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _make_sources(root: Path, per_identity: dict[str, int], start: int = 0) -> list[Path]:
    files, k = [], start
    for ident, n in per_identity.items():
        (root / ident).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            p = root / ident / f"{ident}_{j}.jpg"
            _face_like(k).save(p, quality=95)
            files.append(p)
            k += 1
    return files


# identities chosen so that val_fraction 0.3 puts person1 in val and the others in train
assert [split_of(p, 0.3) for p in ("person0", "person1", "person4", "person5")] == \
    ["train", "val", "train", "train"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 train images (2 identities) + 2 val images (1 identity), with attribute labels."""
    root = tmp_path_factory.mktemp("train_src")
    _make_sources(root / "src", {"person0": 2, "person4": 2, "person1": 2})
    (root / "attr.csv").write_text(
        "file,p_male,p_eyeglasses,p_beard\n"
        "person0_0.jpg,0.9,0.8,0.1\nperson0_1.jpg,0.9,0.1,0.2\n"
        "person4_0.jpg,0.1,0.1,0.9\nperson1_0.jpg,0.2,0.9,0.1\nperson1_1.jpg,0.8,0.1,0.6\n")
    out = root / "data"
    rep = prepare_dataset([root / "src"], out, attributes_csvs=[root / "attr.csv"], val_fraction=0.3)
    assert rep.ok == 6 and rep.splits["train"]["images"] == 4 and rep.splits["val"]["images"] == 2
    return out


# ------------------------------------------------------------------------------------------
# geometry, detection, alignment
# ------------------------------------------------------------------------------------------
def test_similarity_transform_recovers_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (5, 2))
    a, s, t = 0.37, 1.83, np.array([-12.5, 40.25])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    dst = src @ (s * rot).T + t
    m = faces.similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], s * rot, atol=1e-10)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-8)
    np.testing.assert_allclose(faces.transform_points(m, src), dst, atol=1e-8)
    # a mirrored target is fitted by a proper similarity (no reflection)
    m2 = faces.similarity_transform(src, dst * np.array([-1.0, 1.0]))
    assert np.linalg.det(m2[:, :2]) > 0


def test_detect_and_align_astronaut():
    from skimage import data

    img = data.astronaut()
    found = faces.detect_faces(img)
    assert len(found) == 1
    face = faces.largest_face(found)
    assert face.prob > 0.99 and face.landmarks.shape == (5, 2)
    aligned, m = faces.align_face(img, face.landmarks)
    assert aligned.shape == (128, 128, 3) and aligned.dtype == np.uint8 and m.shape == (2, 3)
    np.testing.assert_allclose(faces.transform_points(m, face.landmarks), faces.TEMPLATE_LANDMARKS,
                               atol=4.0)
    again = faces.detect_faces(aligned)
    assert len(again) >= 1
    err = np.linalg.norm(faces.largest_face(again).landmarks - faces.TEMPLATE_LANDMARKS, axis=1)
    assert err.max() < 3.5 and err.mean() < 2.5, err


def test_detect_faces_empty_and_small():
    assert faces.detect_faces(np.zeros((40, 50, 3), np.uint8)) == []
    assert faces.largest_face([]) is None


# ------------------------------------------------------------------------------------------
# prepare_dataset
# ------------------------------------------------------------------------------------------
def test_prepare_dataset_identities_splits_attributes(tmp_path):
    src = tmp_path / "src"
    ids = {f"person{i}": 2 for i in range(8)}
    files = _make_sources(src, ids)
    (src / "person0" / "not_a_face.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (60, 80), (90, 90, 90)).save(src / "person0" / "not_a_face.png")
    (src / "person3" / "broken.jpg").write_bytes(b"not a jpeg")
    # official labels for one image of person2 (male); teacher for the rest of person2 + person5
    (tmp_path / "official.csv").write_text(
        "file,Male,Eyeglasses,No_Beard,Goatee,Mustache\nperson2_0.jpg,1,0,1,0,1\n")
    (tmp_path / "teacher.csv").write_text(
        "file,p_male,p_eyeglasses,p_beard\nperson2_1.jpg,0.1,0.7,0.2\nperson5_0.jpg,0.45,0.2,0.3\n")
    before = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    out = tmp_path / "out"
    seen = []
    rep = prepare_dataset([src], out, attributes_csvs=[tmp_path / "official.csv", tmp_path / "teacher.csv"],
                          val_fraction=0.3, progress=lambda d, t, i: seen.append((d, t)))
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == before  # source untouched
    assert rep.total == 18 and rep.prepared == 16 and rep.failed == 2 and rep.complete
    assert {Path(f["source_file"]).name for f in rep.failures} == {"not_a_face.png", "broken.jpg"}
    assert seen[-1] == (18, 18)
    rows = read_manifest(out)
    assert len(rows) == 16 and list(rows[0].keys())[:9] == list(MANIFEST_COLUMNS[:9])
    assert all((out / r["file"]).is_file() for r in rows)
    assert {r["method"] for r in rows} == {"celeba_aligned"}
    by_split = {sp: {r["identity"] for r in rows if r["split"] == sp} for sp in ("train", "val")}
    assert by_split["train"] and by_split["val"] and not (by_split["train"] & by_split["val"])
    assert all(r["split"] == split_of(r["identity"], 0.3) for r in rows)
    frame = np.asarray(Image.open(out / rows[0]["file"]))
    assert frame.shape == (128, 128, 3)
    row = {Path(r["source_file"]).name: r for r in rows}
    assert (row["person2_0.jpg"]["male"], row["person2_0.jpg"]["beard"], row["person2_0.jpg"]["eyeglasses"]) == ("1", "1", "0")
    assert row["person2_0.jpg"]["attr_source"] == "official"
    # male propagated from the identity's official label, the rest from the teacher
    assert row["person2_1.jpg"]["male"] == "1" and row["person2_1.jpg"]["eyeglasses"] == "1"
    assert row["person2_1.jpg"]["beard"] == "0" and row["person2_1.jpg"]["attr_source"] == "identity+teacher"
    # teacher thresholds: male 0.4, beard 0.35, eyeglasses 0.5
    assert (row["person5_0.jpg"]["male"], row["person5_0.jpg"]["beard"], row["person5_0.jpg"]["eyeglasses"]) == ("1", "0", "0")
    assert row["person6_0.jpg"]["male"] == "" and row["person6_0.jpg"]["attr_source"] == ""
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["prepared"] == 16 and report["failed"] == 2

    # idempotent: nothing is redone
    rep2 = prepare_dataset([src], out, attributes_csvs=[tmp_path / "official.csv", tmp_path / "teacher.csv"],
                           val_fraction=0.3)
    assert rep2.prepared == 0 and rep2.reused == 16 and rep2.failed == 2
    assert read_manifest(out) == rows

    # refuses an output folder inside a source, and writes nothing there
    with pytest.raises(InputError):
        prepare_dataset([src], src / "person1" / "out")
    assert not (src / "person1" / "out").exists()


def test_prepare_dataset_cancel_and_identities_csv(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for i in range(4):
        _face_like(100 + i).save(src / f"{i:06d}.jpg")
    (tmp_path / "ids.csv").write_text("file,identity,source\n000000.jpg,7,aligned\n000001.jpg,7,aligned\n"
                                      "000002.jpg,9,aligned\n")
    calls = []
    rep = prepare_dataset([src], tmp_path / "out", identities_csv=tmp_path / "ids.csv",
                          progress=lambda d, t, i: calls.append(d), cancel=lambda: len(calls) >= 2)
    assert rep.cancelled and not rep.complete and rep.prepared == 2
    rep = prepare_dataset([src], tmp_path / "out", identities_csv=tmp_path / "ids.csv")
    assert rep.complete and rep.reused == 2 and rep.prepared == 2
    ids = {Path(r["source_file"]).name: r["identity"] for r in read_manifest(tmp_path / "out")}
    assert ids == {"000000.jpg": "7", "000001.jpg": "7", "000002.jpg": "9", "000003.jpg": "unknown/000003.jpg"}


@pytest.mark.skipif(not (CELEBA / "wild").is_dir() or not (CELEBA / "aligned").is_dir(),
                    reason="shared CelebA data not available")
def test_prepare_real_celeba_sample(tmp_path):
    """Two aligned and two in-the-wild CelebA photos, read in place (nothing copied)."""
    aligned = sorted((CELEBA / "aligned").glob("*.jpg"))[:2]
    wild = sorted((CELEBA / "wild").glob("*.jpg"))[:2]
    rep = prepare_dataset(aligned + wild, tmp_path / "out", identities_csv=CELEBA / "identities.csv",
                          attributes_csvs=[CELEBA / "attributes_celeba.csv", CELEBA / "attributes_teacher.csv"])
    rows = read_manifest(tmp_path / "out")
    assert rep.ok >= 3
    assert {r["method"] for r in rows} <= {"celeba_aligned", "mtcnn"}
    assert all(r["identity"] and not r["identity"].startswith("unknown/") for r in rows)
    for r in rows:
        if r["method"] == "mtcnn":  # the aligned wild face's landmarks sit on the template
            fr = np.asarray(Image.open(tmp_path / "out" / r["file"]))
            lm = faces.largest_face(faces.detect_faces(fr)).landmarks
            assert np.linalg.norm(lm - faces.TEMPLATE_LANDMARKS, axis=1).max() < 6.0


# ------------------------------------------------------------------------------------------
# FaceDataset
# ------------------------------------------------------------------------------------------
def test_face_dataset_items(tiny_dataset):
    ds = FaceDataset(tiny_dataset, "train", crop=64, flip=True, seed=3)
    assert len(ds) == 4 and ds.images.dtype == np.uint8
    item = ds[1]
    assert item["hr"].shape == (3, 64, 64) and item["y_up"].shape == (3, 64, 64)
    assert item["lr"].shape == (3, 16, 16) and item["attrs"].shape == (3,)
    assert torch.equal(item["lr"], faces.quantize(item["lr"]))
    # deterministic per (seed, epoch, index)
    assert torch.equal(ds[1]["hr"], item["hr"])
    # without augmentation: LR = degrade(full frame), y_up = upsample(lr) cropped like hr
    full = FaceDataset(tiny_dataset, "val", crop=None, flip=False)
    b = full.batch([0, 1], None)
    hr = full.hr_batch([0, 1])
    assert torch.equal(b["lr"], faces.degrade(hr)) and torch.equal(b["y_up"], faces.upsample(b["lr"]))
    cropped = FaceDataset(tiny_dataset, "val", crop=64, flip=False).batch([0], np.random.default_rng(0))
    lr = cropped["lr"]
    assert torch.equal(lr, faces.degrade(hr[:1]))
    up = faces.upsample(lr)
    # find the crop offset: y_up must be the same window of upsample(lr) as hr is of the frame
    hits = [(y, x) for y in range(0, 65, 8) for x in range(0, 65, 8)
            if torch.equal(hr[0, :, y:y + 64, x:x + 64], cropped["hr"][0])]
    assert hits and torch.equal(up[0, :, hits[0][0]:hits[0][0] + 64, hits[0][1]:hits[0][1] + 64],
                                cropped["y_up"][0])
    # attributes: -1 for unknown
    vals = set(torch.cat([FaceDataset(tiny_dataset, "all").attrs.flatten()]).tolist())
    assert vals <= {-1.0, 0.0, 1.0} and -1.0 in vals


def test_shift_moves_the_face_before_the_lr_is_made(tiny_dataset):
    ds = FaceDataset(tiny_dataset, "train", flip=False, shift=4, seed=0)
    hr = ds.hr_batch([0, 1, 2, 3])
    b = ds.batch([0, 1, 2, 3], np.random.default_rng(2))
    padded = torch.nn.functional.pad(hr, (4, 4, 4, 4), mode="reflect")
    moved = 0
    for i in range(4):  # each frame is the reflect-padded frame seen through a window moved by <= 4 px
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                if torch.equal(padded[i, :, 4 - dy:132 - dy, 4 - dx:132 - dx], b["hr"][i])]
        assert hits, i
        moved += hits[0] != (0, 0)
        assert torch.equal(b["lr"][i], faces.degrade(b["hr"][i:i + 1])[0])  # LR made from the moved face
    assert moved >= 3  # 4 draws of 81 offsets: (0, 0) at most once here
    assert torch.equal(ds.batch([0, 1, 2, 3], np.random.default_rng(2))["hr"], b["hr"])  # reproducible
    assert torch.equal(ds.batch([0, 1], None)["hr"], hr[:2])  # no rng: no augmentation
    # the shift draws come after the flip draws and only when shift > 0: old runs replay as before
    plain = FaceDataset(tiny_dataset, "train", flip=True, seed=0)
    assert torch.equal(plain.batch([0, 1], np.random.default_rng(7))["hr"],
                       FaceDataset(tiny_dataset, "train", flip=True, shift=0, seed=0).batch(
                           [0, 1], np.random.default_rng(7))["hr"])
    with pytest.raises(ValueError, match="shift"):
        FaceDataset(tiny_dataset, "train", shift=-1)
    with pytest.raises(ValueError, match="shift"):
        ScoreTrainConfig.tiny(shift=64).validate()


def test_zoom_and_colour_jitter_change_the_face_before_the_lr_is_made(tiny_dataset):
    plain = FaceDataset(tiny_dataset, "train", flip=False, seed=0)
    ds = FaceDataset(tiny_dataset, "train", flip=False, scale_jitter=0.1, color_jitter=0.2, seed=0)
    idx = [0, 1, 2, 3]
    hr = plain.hr_batch(idx)
    b = ds.batch(idx, np.random.default_rng(3))
    assert b["hr"].shape == hr.shape and b["hr"].min() >= 0 and b["hr"].max() <= 1
    for i in range(4):
        assert not torch.allclose(b["hr"][i], hr[i], atol=1e-3)  # every frame changed
        assert torch.equal(b["lr"][i], faces.degrade(b["hr"][i:i + 1])[0])  # LR made from the jittered face
    assert torch.equal(ds.batch(idx, np.random.default_rng(3))["hr"], b["hr"])  # reproducible for a seed
    assert not torch.equal(ds.batch(idx, np.random.default_rng(4))["hr"], b["hr"])
    assert torch.equal(ds.batch(idx, None)["hr"], hr)  # no rng: no augmentation
    # a zoom by 1 and colour factors of 1 leave a frame as it was
    from sdesr_gui.core.datasets import _jitter_colours, _zoom_frames
    assert torch.allclose(_zoom_frames(hr, np.ones(4)), hr, atol=1e-5)
    assert torch.allclose(_jitter_colours(hr, np.ones((4, 3))), hr, atol=1e-6)
    # a zoom enlarges the face about the centre: a 2x zoom's middle 32 px are the middle 16 px, enlarged
    big = _zoom_frames(hr[:1], np.array([2.0]))
    assert (big[0, :, 48:80, 48:80] - torch.nn.functional.interpolate(
        hr[:1, :, 56:72, 56:72], scale_factor=2, mode="bicubic", align_corners=False)[0]).abs().mean() < 0.02
    # saturation 0 gives grey; brightness 0.5 halves the values (before any clamp)
    grey = _jitter_colours(hr, np.tile([1.0, 1.0, 0.0], (4, 1)))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)
    assert torch.allclose(_jitter_colours(hr, np.tile([0.5, 1.0, 1.0], (4, 1))), hr * 0.5, atol=1e-6)
    # the new draws come after the flip and shift draws and only when asked for: old runs replay
    for kw in ({"flip": True}, {"flip": True, "shift": 3}):
        assert torch.equal(FaceDataset(tiny_dataset, "train", seed=0, **kw).batch(idx, np.random.default_rng(7))["hr"],
                           FaceDataset(tiny_dataset, "train", seed=0, scale_jitter=0.0, color_jitter=0.0, **kw)
                           .batch(idx, np.random.default_rng(7))["hr"])
    for bad in ({"scale_jitter": -0.1}, {"scale_jitter": 0.3}, {"color_jitter": 0.6}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FaceDataset(tiny_dataset, "train", **bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            ScoreTrainConfig.tiny(**bad).validate()


def test_realistic_degradation_on_uint8_grid(tiny_dataset):
    ds = FaceDataset(tiny_dataset, "train", degradation="realistic", seed=0)
    b = ds.batch([0, 1, 2, 3], np.random.default_rng(5))
    assert b["lr"].shape == (4, 3, 16, 16)
    assert torch.equal(b["lr"], faces.quantize(b["lr"]))
    again = ds.batch([0, 1, 2, 3], np.random.default_rng(5))
    assert torch.equal(b["lr"], again["lr"])  # the draws come from the rng: reproducible
    assert not torch.equal(b["lr"], faces.degrade(ds.hr_batch([0, 1, 2, 3])))


def test_a_batch_made_on_a_device_is_the_batch_made_on_the_cpu(tiny_dataset):
    # the GPU trainer asks for its batches on the device: same draws, same pixels (here the
    # device is the CPU, named explicitly; on a GPU the bicubic LR is then computed there)
    for degradation in ("bicubic", "realistic"):
        ds = FaceDataset(tiny_dataset, "train", flip=True, degradation=degradation, seed=0)
        plain = ds.batch([0, 1, 2, 3], np.random.default_rng(11))
        there = ds.batch([0, 1, 2, 3], np.random.default_rng(11), device=torch.device("cpu"))
        assert set(plain) == set(there)
        for k in plain:
            assert torch.equal(plain[k], there[k]), (degradation, k)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(_step_noise((2, 3, 8, 8), g1, torch.device("cpu")), torch.randn((2, 3, 8, 8), generator=g2))


# ------------------------------------------------------------------------------------------
# score trainer
# ------------------------------------------------------------------------------------------
def test_learning_rate_warms_up_holds_and_cools_down_to_the_end_of_the_schedule(tiny_dataset, tmp_path):
    lrs = [_lr_at(k, 1.0, 4, total=20, cooldown=5) for k in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4:15] == [1.0] * 11
    assert lrs[15:] == [1.0, 0.8, 0.6, 0.4, 0.2]  # linear, the last step at base / cooldown
    assert [_lr_at(k, 1.0, 4) for k in range(20)] == lrs[:15] + [1.0] * 5  # no cooldown: constant
    with pytest.raises(ValueError, match="cooldown"):
        ScoreTrainConfig.tiny(steps=10, cooldown=11).validate()
    # a run records the rate it used: the logged rate falls to base / cooldown at the last step
    cfg = ScoreTrainConfig.tiny(steps=6, cooldown=3, log_every=1, lr=1e-3)
    train_score(tiny_dataset, tmp_path / "run", cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in rows if r["kind"] == "train"]
    assert logged == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])


def test_sigma_sampling_covers_range():
    g = torch.Generator().manual_seed(0)
    s = sample_sigmas(4000, g, p_mean=-1.2, p_std=1.2, uniform_frac=0.25, sigma_min=0.01, sigma_max=348)
    u = s[:1000]
    assert u.min() >= 0.01 and u.max() <= 348 and u.max() > 100 and u.min() < 0.02
    assert abs(float(s[1000:].log().mean()) + 1.2) < 0.1


def test_score_loss_falls_on_tiny_set(tiny_dataset, tmp_path):
    cfg = ScoreTrainConfig.tiny(steps=30, lr=3e-3, p_std=0.3, uniform_frac=0.0, crop=32)
    res = train_score(tiny_dataset, tmp_path / "run", cfg, show_progress=False, log=lambda m: None)
    assert res.step == 30 and len(res.losses) == 30 and not res.cancelled
    first, last = np.mean(res.losses[:5]), np.mean(res.losses[-5:])
    assert last < 0.7 * first, (first, last)


def test_score_resume_is_bit_identical(tiny_dataset, tmp_path):
    cfg = ScoreTrainConfig.tiny(steps=4, val_every=2, val_images=1, val_steps=1, log_every=1,
                                degradation="realistic")
    quiet = dict(show_progress=False, log=lambda m: None)
    straight = train_score(tiny_dataset, tmp_path / "a", cfg, **quiet)
    part = train_score(tiny_dataset, tmp_path / "b", cfg, steps=2, **quiet)
    assert part.step == 2
    resumed = train_score(tiny_dataset, tmp_path / "b", cfg, **quiet)
    assert resumed.step == straight.step == 4
    assert resumed.losses == straight.losses
    sa, ta = load_train_state(tmp_path / "a")
    sb, tb = load_train_state(tmp_path / "b")
    assert set(ta) == set(tb) and any(k.startswith("opt.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert sa["rng"] == sb["rng"]
    # metrics and the validation grids were written
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    vals = [x for x in lines if x["kind"] == "val"]
    assert [v["step"] for v in vals] == [2, 4] and all(math.isfinite(v["psnr"]) for v in vals)
    assert (tmp_path / "a" / "val_grid_0000004.png").is_file()
    # a changed setting refuses to resume; resume=False refuses to overwrite
    with pytest.raises(TrainingError):
        train_score(tiny_dataset, tmp_path / "b", ScoreTrainConfig.tiny(steps=6, lr=1e-2), **quiet)
    with pytest.raises(TrainingError):
        train_score(tiny_dataset, tmp_path / "b", cfg, resume=False, **quiet)


def test_score_cancel_saves_and_export_roundtrip(tiny_dataset, tmp_path):
    cfg = ScoreTrainConfig.tiny(steps=50)
    done = []
    res = train_score(tiny_dataset, tmp_path / "run", cfg, show_progress=False, log=lambda m: None,
                      progress=lambda s, t, i: done.append(s), cancel=lambda: len(done) >= 3)
    assert res.cancelled and res.step == 3
    state, tensors = load_train_state(tmp_path / "run")
    assert state["step"] == 3 and len(state["losses"]) == 3
    assert not list((tmp_path / "run").glob("*.pkl")) and not list((tmp_path / "run").glob("*.pt"))

    out = tmp_path / "score.safetensors"
    meta = export_score(tmp_path / "run", out, dtype=None, metadata={"training_data": "generated test faces"})
    model, meta2 = load_checkpoint(out)
    assert isinstance(model, ScoreUNet) and meta2["kind"] == "score"
    assert meta2["sde"] == {"type": "ve", "sigma_min": 0.01, "sigma_max": 348.0}
    assert meta2["data_range"] == [0, 1] and meta2["scale_factor"] == 8
    assert meta2["training"]["steps"] == 3 and meta2["training"]["crop"] == 64
    assert meta2["training_data"] == "generated test faces"
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[f"ema.{k}"]), k
    # float16 export loads back close to the EMA weights
    export_score(tmp_path / "run", tmp_path / "s16.safetensors")
    model16, meta16 = load_checkpoint(tmp_path / "s16.safetensors")
    assert "float16" in meta16["stored_dtype"]
    for k, v in model16.state_dict().items():
        assert torch.allclose(v, tensors[f"ema.{k}"], atol=1e-3, rtol=1e-3), k


# ------------------------------------------------------------------------------------------
# attribute trainer
# ------------------------------------------------------------------------------------------
def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 4.0, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, -1.0, 0.0], [-1.0, -1.0, 1.0]])
    loss = masked_bce(logits, targets)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0 and logits.grad[1, 1] == 0
    assert logits.grad[0, 0] != 0 and logits.grad[1, 2] != 0
    # changing an unknown entry's logit does not change the loss
    other = logits.detach().clone()
    other[1, 1] = -50.0
    assert torch.equal(masked_bce(other, targets), loss.detach())
    known = targets >= 0
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach()[known], targets[known])
    assert torch.allclose(loss.detach(), ref)
    # no known labels at all: zero loss, no NaN
    assert float(masked_bce(logits.detach(), torch.full_like(targets, -1.0))) == 0.0
    # pos_weight scales the positive terms only
    pw = torch.tensor([3.0, 1.0, 1.0])
    assert float(masked_bce(logits.detach(), targets, pw)) > float(loss.detach())


def test_attribute_trainer_runs_resumes_and_exports(tiny_dataset, tmp_path):
    cfg = AttrTrainConfig.tiny(steps=4, val_every=2, val_sigmas=(0.01, 1.0), log_every=1)
    quiet = dict(show_progress=False, log=lambda m: None)
    straight = train_attributes(tiny_dataset, tmp_path / "a", cfg, **quiet)
    assert straight.step == 4 and all(math.isfinite(v) for v in straight.losses)
    train_attributes(tiny_dataset, tmp_path / "b", cfg, steps=2, **quiet)
    resumed = train_attributes(tiny_dataset, tmp_path / "b", cfg, **quiet)
    assert resumed.losses == straight.losses
    _, ta = load_train_state(tmp_path / "a")
    _, tb = load_train_state(tmp_path / "b")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    val = straight.last_val
    assert set(val["per_sigma"]) == {"0.01", "1"}
    assert set(val["per_sigma"]["0.01"]) == {"male", "beard", "eyeglasses"}
    out = tmp_path / "attr.safetensors"
    export_attributes(tmp_path / "a", out, metadata={"default_h": 123.0})
    model, meta = load_checkpoint(out)
    assert isinstance(model, AttributeClassifier) and meta["kind"] == "classifier"
    assert meta["default_h"] == 123.0 and set(meta["val_accuracy"]) == {"0.01", "1"}
    assert tuple(model.attributes) == ("male", "beard", "eyeglasses")
    with pytest.raises(TrainingError):
        export_score(tmp_path / "a", tmp_path / "wrong.safetensors")


def test_score_validation_reports_cs_and_writes_a_grid(tiny_dataset, tmp_path):
    cfg = ScoreTrainConfig.tiny(steps=2, val_every=2, val_images=2, val_steps=2)
    res = train_score(tiny_dataset, tmp_path / "run", cfg, show_progress=False, log=lambda m: None)
    val = res.last_val
    assert {"psnr", "ssim", "consistency", "psnr_bicubic"} <= set(val)
    # CS with the offline dlib embedder (cosine of unit vectors)
    assert -1.0 <= val["cs"] <= 1.0 and -1.0 <= val["cs_bicubic"] <= 1.0
    assert (tmp_path / "run" / "val_grid_0000002.png").is_file()


def test_footage_grade_16x_run_validates_on_degraded_faces_and_exports_its_scale(tiny_dataset, tmp_path):
    cfg = ScoreTrainConfig.tiny(steps=2, val_every=2, val_images=2, val_steps=1, lr_size=8,
                                degradation="realistic", crop=None)
    res = train_score(tiny_dataset, tmp_path / "run", cfg, show_progress=False, log=lambda m: None)
    val = res.last_val
    assert math.isfinite(val["psnr_mean_moderate"]) and math.isfinite(val["psnr_bicubic_moderate"])
    assert val["psnr_bicubic_moderate"] < val["psnr_bicubic"]  # the degraded set is harder
    meta = export_score(tmp_path / "run", tmp_path / "s16x.safetensors")
    assert meta["scale_factor"] == 16 and meta["lr_size"] == 8 and meta["training"]["lr_size"] == 8
    assert meta["degradation"] == "realistic" and meta["degradation_mix"] == cfg.degradation_mix
    with pytest.raises(ValueError, match="lr_size"):
        ScoreTrainConfig.tiny(lr_size=4).validate()


def test_a_run_saved_before_a_setting_existed_resumes_at_its_default(tiny_dataset, tmp_path):
    cfg = ScoreTrainConfig.tiny(steps=1)
    quiet = dict(show_progress=False, log=lambda m: None)
    train_score(tiny_dataset, tmp_path / "run", cfg, **quiet)
    state_file = tmp_path / "run" / "train_state.json"
    state = json.loads(state_file.read_text())
    for key in ("lr_size", "degradation_mix", "shift", "scale_jitter", "color_jitter"):  # as an older version wrote it
        state["config"].pop(key)
    state_file.write_text(json.dumps(state))
    assert train_score(tiny_dataset, tmp_path / "run", ScoreTrainConfig.tiny(steps=2), **quiet).step == 2


def test_warm_start_loads_what_fits_and_records_it(tiny_dataset, tmp_path):
    """--init: a new run starts from a checkpoint's weights; parts the file lacks (the v2
    full-resolution head) start fresh and are named; a wrong kind or design is refused."""
    patch = dict(channels=[8, 16], blocks_per_level=1, attn_resolutions=[], emb_dim=16, attn_heads=1,
                 patch=4, full_res_channels=0)
    quiet = dict(show_progress=False, log=lambda m: None)
    base = ScoreTrainConfig.tiny(steps=2, net=patch)
    train_score(tiny_dataset, tmp_path / "base", base, **quiet)
    init = tmp_path / "base.safetensors"
    export_score(tmp_path / "base", init, dtype=None)
    old, _ = load_checkpoint(init)

    logs = []
    headed = ScoreTrainConfig.tiny(steps=0, net=dict(patch, full_res_channels=4), init=str(init))
    train_score(tiny_dataset, tmp_path / "warm", headed, show_progress=False, log=logs.append)
    state, tensors = load_train_state(tmp_path / "warm")
    assert state["extra"]["init"]["new_parts"] == ["full_mix", "full_out", "full_proj"]
    assert state["extra"]["init"]["sha256"] and state["config"]["init"] == str(init)
    assert any("new parts start fresh" in m for m in logs)
    for k, v in old.state_dict().items():
        assert torch.equal(tensors[f"model.{k}"], v) and torch.equal(tensors[f"ema.{k}"], v), k
    # it trains on from there, and resumes without --init being given again
    res = train_score(tiny_dataset, tmp_path / "warm", ScoreTrainConfig.tiny(
        steps=2, net=dict(patch, full_res_channels=4), init=str(init)), **quiet)
    assert res.step == 2 and all(math.isfinite(v) for v in res.losses)
    # the exported weights carry their lineage: the warm-start file and that file's own training
    export_score(tmp_path / "warm", tmp_path / "warm.safetensors", dtype=None)
    lineage = load_checkpoint(tmp_path / "warm.safetensors")[1]["training"]["init"]
    assert lineage["file"] == "base.safetensors" and lineage["sha256"] == state["extra"]["init"]["sha256"]
    assert lineage["new_parts"] == ["full_mix", "full_out", "full_proj"] and lineage["training"]["steps"] == 2

    # a run state from before the lineage was recorded: read from the file while it is unchanged
    from sdesr_gui.core.training import _init_lineage

    bare = {k: state["extra"]["init"][k] for k in ("path", "sha256", "new_parts")}
    assert _init_lineage(bare)["training"]["steps"] == 2
    assert "training" not in _init_lineage(dict(bare, sha256="0" * 64))  # another file now: not claimed

    with pytest.raises(TrainingError, match="does not fit"):
        train_score(tiny_dataset, tmp_path / "wide", ScoreTrainConfig.tiny(
            steps=0, net=dict(patch, channels=[8, 24]), init=str(init)), **quiet)
    train_attributes(tiny_dataset, tmp_path / "attr", AttrTrainConfig.tiny(steps=1), **quiet)
    export_attributes(tmp_path / "attr", tmp_path / "attr.safetensors")
    with pytest.raises(TrainingError, match="not a score model"):
        train_score(tiny_dataset, tmp_path / "kind", ScoreTrainConfig.tiny(
            steps=0, init=str(tmp_path / "attr.safetensors")), **quiet)


def test_pgd_perturbation_stays_in_the_ball_and_raises_the_loss():
    from sdesr_gui.core.training import _pgd_l2

    torch.manual_seed(0)
    from sdesr_gui.core.models import AttributeClassifierConfig

    m = AttributeClassifier(AttributeClassifierConfig.tiny())
    x = torch.rand(3, 3, 32, 32)
    sigma = torch.tensor([0.01, 0.1, 1.0])
    targets = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # -1: unknown
    pw = torch.ones(3)
    delta = _pgd_l2(m, x, sigma, targets, pw, eps=0.5, steps=3, device=torch.device("cpu"), amp_dtype=None)
    assert delta.shape == x.shape
    assert (delta.flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    with torch.no_grad():
        before = masked_bce(m(x, sigma), targets, pw)
        after = masked_bce(m(x + delta, sigma), targets, pw)
    assert after > before


def test_adversarial_attribute_training_resumes_exactly(tiny_dataset, tmp_path):
    cfg = AttrTrainConfig.tiny(steps=3, adv_eps=0.5, adv_steps=2)
    quiet = dict(show_progress=False, log=lambda m: None)
    straight = train_attributes(tiny_dataset, tmp_path / "a", cfg, **quiet)
    train_attributes(tiny_dataset, tmp_path / "b", cfg, steps=1, **quiet)
    resumed = train_attributes(tiny_dataset, tmp_path / "b", cfg, **quiet)
    assert resumed.losses == straight.losses and all(math.isfinite(v) for v in straight.losses)
    plain = train_attributes(tiny_dataset, tmp_path / "c", AttrTrainConfig.tiny(steps=3), **quiet)
    assert plain.losses[0] < straight.losses[0]  # same batch, the perturbed one is harder
    with pytest.raises(TrainingError, match="adv_eps"):
        train_attributes(tiny_dataset, tmp_path / "d", AttrTrainConfig.tiny(adv_eps=-1.0), **quiet)
