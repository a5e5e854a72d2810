"""Render the bundled sample images and the sample clip from scikit-image's public-domain
astronaut photo (NASA). Nothing else goes in: the scene around her is drawn here.

resources/sample_face.png     the astronaut's face aligned to the 128x128 face frame (MTCNN + template)
resources/sample_face_lr.png  its 16x16 LR (the model's input)
resources/sample_clip.mp4     a 4 s, 15 fps, 1280x720 "surveillance" clip: a slow pan and zoom over a
                              lobby with her portrait on the wall, her face about 24 px wide, mild
                              sensor noise, a burned-in camera caption with the frame number,
                              H.264 when OpenCV can encode it, else MPEG-4 part 2 (mp4v)
resources/sample_scene.jpg    a still of the same scene (1280x720, face about 32 px wide)

Deterministic (fixed seeds); the face frame may differ by one grey level in a few pixels between
torch builds or thread counts (MTCNN's landmarks move by a hair), so regenerate it only when needed.
Run: .venv/bin/python scripts/make_resources.py [--only face|clip|still]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from sdesr_gui.core import faces

ROOT = Path(__file__).resolve().parents[1] / "resources"

SCENE_W, SCENE_H = 2400, 1350  # the lobby, drawn once
OUT_W, OUT_H = 1280, 720
FPS = 15
SECONDS = 4
#: the astronaut photo's MTCNN face box is 87 px wide at 512x512
ASTRO_FACE_PX = 86.7


def make_face() -> None:
    img = data.astronaut()
    face = faces.largest_face(faces.detect_faces(img))
    aligned, _ = faces.align_face(img, face.landmarks)
    Image.fromarray(aligned).save(ROOT / "sample_face.png", optimize=True)
    lr = faces.to_uint8(faces.degrade(faces.to_tensor(aligned)))[0]
    Image.fromarray(lr).save(ROOT / "sample_face_lr.png")
    print("wrote", ROOT / "sample_face.png", ROOT / "sample_face_lr.png", "prob", round(float(face.prob), 4))


# ------------------------------------------------------------------------------------------ scene
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1] (bicubic-upsampled random grid)."""
    g = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]


def draw_scene(portrait_scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The lobby (RGB uint8) and the centre of the portrait's face in scene pixels."""
    rng = np.random.default_rng(2024)
    h, w = SCENE_H, SCENE_W
    horizon = int(h * 0.66)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    wall = np.empty((h, w, 3), np.float32)
    wall[:] = np.array([176, 170, 158], np.float32) * (0.85 + 0.2 * yy[..., None])
    wall += 6 * _smooth_noise(rng, h, w, 40)[..., None]
    # floor: darker tiles in perspective
    floor = np.array([92, 88, 84], np.float32)
    for y in range(horizon, h):
        t = (y - horizon) / (h - horizon)
        wall[y] = floor * (0.8 + 0.4 * t)
    img = np.clip(wall, 0, 255).astype(np.uint8)
    vx = w // 2
    for k in range(-14, 15):
        cv2.line(img, (vx + k * 40, horizon), (vx + k * 260, h), (70, 67, 64), 2, cv2.LINE_AA)
    for j in range(1, 9):
        y = horizon + int((h - horizon) * (j / 9) ** 1.6)
        cv2.line(img, (0, y), (w, y), (74, 70, 66), 2, cv2.LINE_AA)
    cv2.line(img, (0, horizon), (w, horizon), (60, 58, 55), 5, cv2.LINE_AA)
    # doors, a window, a bench, ceiling lights and signs
    for x0 in (160, 1880):
        cv2.rectangle(img, (x0, horizon - 520), (x0 + 300, horizon), (96, 72, 54), -1)
        cv2.rectangle(img, (x0, horizon - 520), (x0 + 300, horizon), (50, 40, 32), 8)
        cv2.circle(img, (x0 + 262, horizon - 250), 12, (200, 190, 120), -1)
    cv2.rectangle(img, (1340, 260), (1760, 600), (150, 180, 205), -1)
    cv2.rectangle(img, (1340, 260), (1760, 600), (70, 70, 72), 10)
    cv2.line(img, (1550, 260), (1550, 600), (70, 70, 72), 8)
    cv2.rectangle(img, (560, horizon + 60), (1160, horizon + 110), (60, 62, 70), -1)
    for x in (600, 1120):
        cv2.rectangle(img, (x - 10, horizon + 110), (x + 10, horizon + 190), (45, 45, 48), -1)
    for x in range(300, w, 600):
        cv2.rectangle(img, (x, 0), (x + 220, 26), (245, 245, 235), -1)
    cv2.rectangle(img, (260, horizon - 620), (460, horizon - 560), (30, 120, 40), -1)
    cv2.putText(img, "EXIT", (296, horizon - 572), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (240, 240, 240), 3,
                cv2.LINE_AA)
    cv2.putText(img, "GATE 4", (1930, horizon - 560), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (40, 40, 40), 4,
                cv2.LINE_AA)
    # the portrait: scikit-image's astronaut in a dark frame on the wall
    astro = data.astronaut()
    side = int(round(512 * portrait_scale))
    small = np.asarray(Image.fromarray(astro).resize((side, side), Image.Resampling.LANCZOS))
    px, py = 880, 330
    cv2.rectangle(img, (px - 14, py - 14), (px + side + 14, py + side + 14), (35, 30, 28), -1)
    img[py:py + side, px:px + side] = small
    # her face centre in the photo (MTCNN box centre 224, 117 of 512)
    return img, (px + 224.4 * portrait_scale, py + 117.1 * portrait_scale)


def camera(scene: np.ndarray, centre: tuple[float, float], view_w: float) -> np.ndarray:
    """The camera's 1280x720 view of ``view_w`` scene pixels centred on ``centre`` (area resampling)."""
    k = OUT_W / view_w
    m = np.array([[k, 0, OUT_W / 2 - k * centre[0]], [0, k, OUT_H / 2 - k * centre[1]]], np.float64)
    return cv2.warpAffine(scene, m, (OUT_W, OUT_H), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def caption(frame: np.ndarray, text: str) -> None:
    cv2.rectangle(frame, (12, 12), (12 + 15 * len(text) + 16, 48), (0, 0, 0), -1)
    cv2.putText(frame, text, (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.75, (235, 235, 235), 2, cv2.LINE_AA)


def sensor_noise(rng: np.random.Generator, frame: np.ndarray, sigma: float) -> np.ndarray:
    n = rng.normal(0, sigma, frame.shape).astype(np.float32)
    return np.clip(frame.astype(np.float32) + n, 0, 255).astype(np.uint8)


def _writer(path: Path):
    """An OpenCV writer for H.264 if available, else mp4v; (writer, codec name)."""
    for fourcc, name in (("avc1", "H.264"), ("mp4v", "MPEG-4 part 2 (mp4v)")):
        w = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), FPS, (OUT_W, OUT_H),
                            [cv2.VIDEOWRITER_PROP_KEY_INTERVAL, 2 * FPS])
        if w.isOpened():
            return w, name
        w.release()
    raise SystemExit("OpenCV can encode neither H.264 nor mp4v here")


def make_clip(face_px: float = 24.0) -> None:
    # the face is face_px wide in the camera view at the middle of the zoom
    view_mid = 1560.0
    scale = face_px * view_mid / OUT_W / ASTRO_FACE_PX
    scene, face_c = draw_scene(scale)
    rng = np.random.default_rng(7)
    n = FPS * SECONDS
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=ROOT)
    os.close(fd)
    tmp = Path(tmp)
    try:
        w, codec = _writer(tmp)
        for i in range(n):
            t = i / (n - 1)
            ease = 0.5 - 0.5 * np.cos(np.pi * t)
            view_w = 1680.0 - 240.0 * ease  # slow zoom in: face ~22 -> ~26 px
            centre = (face_c[0] + 260.0 - 420.0 * ease, face_c[1] + 250.0 - 60.0 * ease)
            frame = camera(scene, centre, view_w)
            frame = sensor_noise(rng, frame, 3.0)
            caption(frame, f"CAM 04  2026-03-14 21:07:{33 + i // FPS:02d}  F{i:04d}")
            w.write(np.ascontiguousarray(frame[:, :, ::-1]))
        w.release()
        out = ROOT / "sample_clip.mp4"
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({n} frames, {codec}, {out.stat().st_size / 2**20:.2f} MiB)")


def make_still(face_px: float = 32.0) -> None:
    view_w = 1500.0
    scale = face_px * view_w / OUT_W / ASTRO_FACE_PX
    scene, face_c = draw_scene(scale)
    frame = camera(scene, (face_c[0] - 180.0, face_c[1] + 120.0), view_w)
    frame = sensor_noise(np.random.default_rng(11), frame, 2.5)
    caption(frame, "CAM 02  2026-03-14 21:09:12")
    out = ROOT / "sample_scene.jpg"
    Image.fromarray(frame).save(out, quality=88, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 2**10:.0f} KiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["face", "clip", "still"], help="make only this resource")
    args = ap.parse_args()
    ROOT.mkdir(exist_ok=True)
    if args.only in (None, "face"):
        make_face()
    if args.only in (None, "clip"):
        make_clip()
    if args.only in (None, "still"):
        make_still()


if __name__ == "__main__":
    main()
