"""Faces in footage: detection and alignment on real faces, tiny faces, manual boxes and eye
clicks, the LR of a face, and the small-face flags.

Real faces: scikit-image's public-domain astronaut, the bundled sample clip, and CelebA
in-the-wild photos from the shared data when it is present (skipped cleanly otherwise).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from sdesr_gui.core import faces
from sdesr_gui.core.video import open_source

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
CELEBA = SHARED / "data" / "celeba"
T = faces.TEMPLATE_LANDMARKS


@pytest.fixture(scope="module")
def astronaut():
    img = data.astronaut()
    face = faces.largest_face(faces.detect_faces(img, min_prob=0.9))
    assert face is not None
    return img, face


def _errors(m, landmarks) -> np.ndarray:
    return np.linalg.norm(faces.transform_points(m, landmarks) - T, axis=1)


def test_astronaut_landmarks_land_on_the_template(astronaut) -> None:
    img, face = astronaut
    assert face.prob > 0.99 and 80 < face.width < 95
    crop, m = faces.align_face(img, face.landmarks)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    err = _errors(m, face.landmarks)
    # a similarity has 4 degrees of freedom for 10 coordinates: eyes and nose land within 2 px,
    # her wide smile puts the mouth corners about 3.5 px out
    assert err[:3].max() < 2.0, err
    assert err.mean() < 2.5, err
    # the crop really is aligned: detecting again on it finds the eyes on the template
    again = faces.largest_face(faces.detect_faces(crop))
    assert again is not None
    assert np.linalg.norm(again.landmarks[:2] - T[:2], axis=1).max() < 2.5


def test_alignment_is_exact_for_a_similar_face() -> None:
    # landmarks that are an exact similarity of the template are mapped back exactly
    ang, k, t = 0.3, 0.37, np.array([410.0, 220.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = (T @ r.T) * k + t
    img = np.zeros((720, 1280, 3), np.uint8)
    crop, m = faces.align_face(img, pts)
    assert _errors(m, pts).max() < 1e-6


@pytest.mark.skipif(not CELEBA.is_dir(), reason="shared CelebA data is not present")
def test_shared_wild_photos_align_onto_the_template() -> None:
    rows = [r for r in csv.DictReader(open(CELEBA / "identities.csv")) if r["source"] == "wild"][:12]
    eye_err, mean_err = [], []
    for r in rows:
        img = np.asarray(Image.open(CELEBA / "wild" / r["file"]).convert("RGB"))
        face = faces.largest_face(faces.detect_faces(img, min_prob=0.9))
        if face is None:
            continue
        _, m = faces.align_face(img, face.landmarks)
        e = _errors(m, face.landmarks)
        eye_err.append(e[:2].max())
        mean_err.append(e.mean())
    assert len(eye_err) >= 9
    # posed faces cannot fit a similarity exactly; the typical face lands within 2 px
    assert np.median(eye_err) < 2.0 and np.median(mean_err) < 2.0, (eye_err, mean_err)


def test_sample_clip_face_is_found_and_aligned() -> None:
    clip = ROOT / "resources" / "sample_clip.mp4"
    if not clip.exists():
        pytest.skip("resources/sample_clip.mp4 is missing")
    with open_source(clip) as src:
        frame = src.frame(30)
    found = faces.detect_faces_in_frame(frame)
    assert len(found) == 1
    f = found[0]
    assert 18 < f.width < 30 and f.prob > 0.95  # the clip's face is about 24 px wide
    af = faces.extract_face(frame, face=f)
    assert af.crop.shape == (128, 128, 3) and af.lr.shape == (16, 16, 3)
    assert af.method == "landmarks" and not af.small and not af.genuine_hr
    assert 2.0 < af.magnification < 3.5  # the frame shows the face about 60 px wide
    assert _errors(af.matrix, f.landmarks)[:2].max() < 2.0
    assert np.array_equal(af.lr, faces.lr_from_frame(af.crop))


def _tiny_scene(face_px: float) -> tuple[np.ndarray, tuple[float, float]]:
    """A 1280x720 frame with the astronaut shrunk so her face is ``face_px`` wide; face centre."""
    a = data.astronaut()
    s = face_px / 86.7
    side = int(round(512 * s))
    small = cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(140, 12, (720, 1280, 3)), 0, 255).astype(np.uint8)
    img[300:300 + side, 700:700 + side] = small
    return img, (700 + 224.4 * s, 300 + 117.1 * s)


def test_tiny_face_is_found_by_the_upscaled_tiled_pass() -> None:
    img, (cx, cy) = _tiny_scene(8.5)
    found = faces.detect_faces_in_frame(img, upscale=True, min_prob=0.9)
    assert len(found) == 1, [f.box for f in found]  # the two passes are merged, not doubled
    f = found[0]
    assert abs((f.box[0] + f.box[2]) / 2 - cx) < 3 and abs((f.box[1] + f.box[3]) / 2 - cy) < 3
    assert 5 < f.width < 13
    af = faces.extract_face(img, face=f)
    assert af.small and af.crop.shape == (128, 128, 3)  # processed and flagged, not refused
    assert "smaller than" in af.note or "interpolated" in af.note


def test_manual_box_maps_onto_the_detector_box(astronaut) -> None:
    img, face = astronaut
    crop, m = faces.align_box(img, face.box)
    assert crop.shape == (128, 128, 3)
    # no rotation, and the detector's box lands where MTCNN boxes sit in the frame
    assert abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12
    corners = faces.transform_points(m, [face.box[:2], face.box[2:]])
    cx, cy, bw, bh = faces.MTCNN_BOX_IN_FRAME
    assert np.allclose(corners.mean(axis=0), [cx, cy], atol=1e-6)
    # so her landmarks fall close to the template (box only: a few pixels, not exact)
    assert _errors(m, face.landmarks).max() < 8.0


def test_eye_clicks_align_exactly(astronaut) -> None:
    img, face = astronaut
    eyes = face.landmarks[:2]
    af = faces.extract_face(img, box=face.box, eyes=eyes[::-1])  # clicks in either order
    assert af.method == "eyes"
    assert _errors(af.matrix, face.landmarks)[:2].max() < 1e-6
    af2 = faces.extract_face(img, eyes=eyes)  # eyes alone are enough; a box is estimated
    assert np.allclose(af2.matrix, af.matrix)
    assert abs(af2.face_width - face.width) < 0.2 * face.width
    with pytest.raises(ValueError):
        faces.extract_face(img, eyes=[eyes[0], eyes[0]])


def test_small_faces_are_flagged_not_refused() -> None:
    img, (cx, cy) = _tiny_scene(4.0)
    box = (cx - 2, cy - 2.5, cx + 2, cy + 2.5)
    af = faces.extract_face(img, box=box)
    assert af.method == "box" and af.small and af.lr_interpolated
    assert af.crop.shape == (128, 128, 3) and af.lr.shape == (16, 16, 3)
    assert af.magnification > 8
    d = af.to_dict()
    assert d["small"] and d["lr_interpolated"] and "invented" in d["note"]
    with pytest.raises(ValueError):
        faces.extract_face(img, box=(10, 10, 10, 20))
    with pytest.raises(ValueError):
        faces.extract_face(img)


def test_big_face_crop_is_genuine_hr(astronaut) -> None:
    img, face = astronaut
    big = cv2.resize(img, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    f = faces.Face(tuple(np.asarray(face.box) * 3), face.prob, face.landmarks * 3)
    af = faces.extract_face(big, face=f)
    assert af.genuine_hr and not af.small and not af.lr_interpolated and af.note == ""
