"""Sources: stills as one frame, videos with frame-exact random access, one clear error for bad files.

Exactness is checked on clips whose frames carry their own number as a 10-bit code of black and
white blocks (robust to compression), written with a keyframe only every 25 frames so a seek
must decode forward from an earlier keyframe.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sdesr_gui.core.video import InputError, StillSource, VideoSource, open_source

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = ROOT / "resources" / "sample_clip.mp4"
W, H = 320, 240
BITS = 10


def coded_frame(i: int) -> np.ndarray:
    """BGR frame showing ``i`` as 10 blocks (white = 1) and as text."""
    f = np.full((H, W, 3), 90, np.uint8)
    f[:, :, 0] = (i * 7) % 256  # colour changes too, so neighbours differ everywhere
    for b in range(BITS):
        f[8:40, 8 + b * 30:32 + b * 30] = 255 if (i >> b) & 1 else 0
    cv2.putText(f, str(i), (40, 190), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
    return f


def read_code(rgb: np.ndarray) -> int:
    return sum(1 << b for b in range(BITS) if rgb[24, 20 + b * 30].mean() > 128)


def write_clip(path: Path, fourcc: str, n: int, fps: float = 25.0, key_interval: int = 25) -> Path:
    w = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (W, H),
                        [cv2.VIDEOWRITER_PROP_KEY_INTERVAL, key_interval])
    if not w.isOpened():
        pytest.skip(f"OpenCV cannot write {fourcc} here")
    for i in range(n):
        w.write(coded_frame(i))
    w.release()
    return path


@pytest.mark.parametrize("fourcc,ext", [("mp4v", ".mp4"), ("XVID", ".avi"), ("mp4v", ".mkv"), ("MJPG", ".avi")])
def test_random_access_is_frame_exact(tmp_path: Path, fourcc: str, ext: str) -> None:
    n = 160
    clip = write_clip(tmp_path / f"coded{ext}", fourcc, n)
    with open_source(clip) as src:
        assert isinstance(src, VideoSource) and src.kind == "video"
        assert src.frame_count == n
        assert src.fps == pytest.approx(25.0)
        assert src.size == (W, H)
        assert src.timestamp(50) == pytest.approx(2.0)
        order = list(range(n))
        random.Random(1).shuffle(order)
        # jumps back and forth, far and near, then the very end and the start again
        for i in order[:60] + [n - 1, 0, 1, 2, n - 2, 37, 36, 35]:
            img = src.frame(i)
            assert img.dtype == np.uint8 and img.shape == (H, W, 3)
            assert read_code(img) == i, f"asked for frame {i}, got frame {read_code(img)}"
        assert src.seeks > 0  # long jumps really did seek
        with pytest.raises(InputError, match="outside"):
            src.frame(n)
        with pytest.raises(InputError):
            src.frame(-1)


def test_frames_are_rgb(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.avi", "MJPG", 3)
    with open_source(clip) as src:
        img = src.frame(1)
    # coded_frame's blue channel (BGR index 0) is (i * 7) % 256 = 7 for frame 1, far from the red 90
    assert abs(int(img[120, 300, 2]) - 7) < 12 and abs(int(img[120, 300, 0]) - 90) < 12


def test_sample_clip_random_access_matches_sequential_decoding() -> None:
    if not SAMPLE_CLIP.exists():
        pytest.skip("resources/sample_clip.mp4 is missing (scripts/make_resources.py makes it)")
    cap = cv2.VideoCapture(str(SAMPLE_CLIP), cv2.CAP_FFMPEG)
    seq = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        seq.append(bgr[:, :, ::-1].copy())
    cap.release()
    with open_source(SAMPLE_CLIP) as src:
        assert src.frame_count == len(seq) == 60
        assert src.fps == pytest.approx(15.0)
        assert src.size == (1280, 720)
        assert src.timestamp(59) == pytest.approx(59 / 15)
        for i in [45, 3, 59, 30, 31, 29, 0, 17, 58, 12]:
            assert np.array_equal(src.frame(i), seq[i]), f"frame {i} differs from sequential decoding"


def test_frame_returns_a_copy(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.avi", "MJPG", 4)
    with open_source(clip) as src:
        a = src.frame(2)
        a[:] = 0
        assert read_code(src.frame(2)) == 2


# ------------------------------------------------------------------------------------------ stills
def _save_variants(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = {}
    for ext in ("png", "jpg", "bmp", "tif"):
        out[ext] = d / f"rgb.{ext}"
        Image.fromarray(rgb).save(out[ext])
    out["gray"] = d / "gray.png"
    Image.fromarray(rgb[:, :, 0], "L").save(out["gray"])
    out["rgba"] = d / "rgba.png"
    Image.fromarray(np.dstack([rgb, np.full((20, 24), 200, np.uint8)]), "RGBA").save(out["rgba"])
    out["palette"] = d / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(out["palette"])
    out["cmyk"] = d / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(out["cmyk"])
    out["gray16"] = d / "gray16.png"
    cv2.imwrite(str(out["gray16"]), (rgb[:, :, 0].astype(np.uint16) * 257))
    out["rgb16"] = d / "rgb16.tif"
    cv2.imwrite(str(out["rgb16"]), (rgb.astype(np.uint16) * 257)[:, :, ::-1])
    return out


def test_stills_are_one_frame_sources(tmp_path: Path) -> None:
    for name, p in _save_variants(tmp_path).items():
        src = open_source(p)
        assert isinstance(src, StillSource) and src.kind == "still", name
        assert (src.frame_count, src.fps, src.size) == (1, 0.0, (24, 20)), name
        img = src.frame(0)
        assert img.dtype == np.uint8 and img.shape == (20, 24, 3), name
        assert src.timestamp(0) == 0.0
        with pytest.raises(InputError, match="only frame 0"):
            src.frame(1)


# ------------------------------------------------------------------------------------------ errors
def _one_sentence(e: pytest.ExceptionInfo, name: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and name in msg and "Traceback" not in msg


def test_bad_files_give_one_clear_error(tmp_path: Path) -> None:
    cases = {}
    cases["missing.mp4"] = tmp_path / "missing.mp4"
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases["empty.mp4"] = tmp_path / "empty.mp4"
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    cases["junk.mp4"] = tmp_path / "junk.mp4"
    (tmp_path / "junk.xyz").write_bytes(np.random.default_rng(1).bytes(5000))
    cases["junk.xyz"] = tmp_path / "junk.xyz"
    (tmp_path / "notes.png").write_text("not an image")
    cases["notes.png"] = tmp_path / "notes.png"
    (tmp_path / "folder.mkv").mkdir()
    cases["folder.mkv"] = tmp_path / "folder.mkv"
    for name, p in cases.items():
        with pytest.raises(InputError) as e:
            open_source(p)
        _one_sentence(e, name)


def test_opening_a_video_can_be_cancelled(tmp_path: Path) -> None:
    """Opening may decode a whole file (to count its frames): a cancel stops it, nothing stays open."""
    from sdesr_gui.core.errors import Cancelled
    from sdesr_gui.core.video import check_input_file

    clip = write_clip(tmp_path / "clip.avi", "MJPG", 30)
    with pytest.raises(Cancelled):
        open_source(clip, cancel=lambda: True)
    asked = []
    with open_source(clip, cancel=lambda: asked.append(1) and False) as src:  # polled, never set
        assert src.frame_count == 30 and asked
    assert check_input_file(clip) == clip
    with pytest.raises(InputError, match="does not exist"):
        check_input_file(tmp_path / "nope.avi")


def test_truncated_video_never_returns_garbage(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "full.avi", "MJPG", 40)
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    try:
        src = open_source(cut)
    except InputError as e:
        assert "cut.avi" in str(e)
        return
    with src:
        assert 1 <= src.frame_count <= 40
        # the last frame may be cut in the middle (the decoder shows what it got); the others are whole
        for i in reversed(range(src.frame_count - 1)):
            assert read_code(src.frame(i)) == i
        src.frame(src.frame_count - 1)
        with pytest.raises(InputError):
            src.frame(src.frame_count)


def test_a_corrupt_video_is_one_line_on_stderr(tmp_path: Path) -> None:
    """FFmpeg's and OpenCV's own console messages are silenced: the CLI prints one sentence.

    Runs in a fresh process, because FFmpeg reads its log level when a video is first opened.
    """
    import subprocess
    import sys

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "corrupt.mp4").write_bytes(SAMPLE_CLIP.read_bytes()[:3000] if SAMPLE_CLIP.exists()
                                           else b"\0\0\0\x18ftypmp42" + bytes(3000))
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    r = subprocess.run([sys.executable, "-c", "import sys; from sdesr_gui.cli import main; sys.exit(main())",
                        "detect", str(evidence / "corrupt.mp4"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "corrupt.mp4" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
