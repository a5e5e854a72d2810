"""Face embedders and (with :class:`GalleryIndex`) the gallery matcher. Qt-free.

Two real embedders behind one interface:

* ``dlib`` (default, offline): dlib's face-recognition ResNet (128-D) with its 5-point shape
  predictor, both from the ``face-recognition-models`` package, run by ``dlib-bin``.
* ``facenet``: facenet-pytorch's InceptionResnetV1 trained on VGGFace2 (512-D); its weights are
  downloaded on first use, or read from a local file given as ``weights``.

Both take either canonical 128x128 face frames (:meth:`Embedder.embed_aligned`, used for the
CS metric and for samples) or an arbitrary photo (:meth:`Embedder.embed_image`: the largest
MTCNN face). Embeddings are float32 and L2-normalised, so a dot product is the cosine.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import faces
from .video import InputError

__all__ = ["EmbedderUnavailable", "Embedder", "DlibEmbedder", "FacenetEmbedder", "get_embedder",
           "EMBEDDERS", "FRAME_BOX_DLIB"]

#: where dlib's frontal detector puts the face in the canonical 128 frame (mean over CelebA
#: validation frames and the astronaut: left, top, right, bottom); the shape predictor starts here
FRAME_BOX_DLIB = (30, 46, 96, 112)


class EmbedderUnavailable(InputError):
    """The requested face embedder cannot be loaded (message: one sentence for the user)."""


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class Embedder:
    """Interface: ``name``, ``dim``, ``embed_aligned(frames)``, ``embed_image(rgb)``."""

    name: str = ""
    dim: int = 0

    def embed_aligned(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings ``[N, dim]`` of canonical 128x128 RGB uint8 face frames."""
        raise NotImplementedError

    def embed_image(self, rgb: np.ndarray):
        """(embedding ``[dim]``, :class:`faces.Face`) of the largest face in a photo, or (None, None)."""
        found = faces.detect_faces(rgb)
        if not found:
            return None, None
        face = found[0]
        frame, _ = faces.align_face(faces._as_rgb_uint8(rgb), face.landmarks)
        return self.embed_aligned([frame])[0], face

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim}


def _dlib_model_dir() -> Path:
    # face_recognition_models imports pkg_resources (gone from new setuptools): find its files
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable("The dlib face embedder needs the 'face-recognition-models' "
                                  "package, which is not installed (pip install face-recognition-models).")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibEmbedder(Embedder):
    """dlib's ResNet face descriptor (128-D), offline."""

    name = "dlib"
    dim = 128

    def __init__(self, model_dir: Optional[os.PathLike] = None, jitter: int = 0) -> None:
        try:
            import dlib
        except ImportError:
            raise EmbedderUnavailable("The dlib face embedder needs the 'dlib-bin' package, which is "
                                      "not installed (pip install dlib-bin).") from None
        d = Path(model_dir) if model_dir is not None else _dlib_model_dir()
        sp, rec = d / "shape_predictor_5_face_landmarks.dat", d / "dlib_face_recognition_resnet_model_v1.dat"
        for f in (sp, rec):
            if not f.is_file():
                raise EmbedderUnavailable(f"The dlib model file {f.name} is missing from {d}.")
        self._dlib = dlib
        self._sp = dlib.shape_predictor(str(sp))
        self._rec = dlib.face_recognition_model_v1(str(rec))
        self.jitter = int(jitter)
        self.model_files = [str(sp), str(rec)]

    def _describe(self, rgb: np.ndarray, box) -> np.ndarray:
        dlib = self._dlib
        rect = dlib.rectangle(*[int(round(v)) for v in box])
        shape = self._sp(rgb, rect)
        return np.asarray(self._rec.compute_face_descriptor(rgb, shape, self.jitter), dtype=np.float32)

    def embed_aligned(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for fr in frames:
            rgb = np.ascontiguousarray(faces._as_rgb_uint8(np.asarray(fr)))
            if rgb.shape[:2] != (faces.FRAME_SIZE, faces.FRAME_SIZE):
                raise ValueError(f"embed_aligned needs {faces.FRAME_SIZE}x{faces.FRAME_SIZE} face frames, "
                                 f"got {rgb.shape[1]}x{rgb.shape[0]}.")
            out.append(self._describe(rgb, FRAME_BOX_DLIB))
        return _l2(np.stack(out)) if out else np.zeros((0, self.dim), np.float32)


class FacenetEmbedder(Embedder):
    """facenet-pytorch InceptionResnetV1 'vggface2' (512-D): downloaded once, or a local file."""

    name = "facenet"
    dim = 512

    def __init__(self, weights: Optional[os.PathLike] = None, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        if weights is not None:
            p = Path(weights)
            if not p.is_file():
                raise EmbedderUnavailable(f"The facenet weights file {p} does not exist.")
            net = InceptionResnetV1(pretrained=None, classify=False)
            try:
                state = torch.load(str(p), map_location="cpu", weights_only=True)
                net.load_state_dict(state, strict=False)
            except Exception:
                raise EmbedderUnavailable(f"{p.name} is not an InceptionResnetV1 state dict.") from None
        else:
            try:
                net = InceptionResnetV1(pretrained="vggface2")
            except Exception:
                raise EmbedderUnavailable(
                    "The facenet 'vggface2' weights are not on this machine and could not be "
                    "downloaded (offline?); pass a local weights file or use the dlib embedder.") from None
        self._torch = torch
        self.net = net.eval().to(device)
        self.device = device

    def embed_aligned(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        torch = self._torch
        if not len(frames):
            return np.zeros((0, self.dim), np.float32)
        x = torch.cat([faces.to_tensor(faces._as_rgb_uint8(np.asarray(f))) for f in frames])
        # the canonical frame is close to facenet's 160 crop with margin; it wants [-1, 1]
        x = torch.nn.functional.interpolate(x, size=160, mode="bilinear", align_corners=False)
        with torch.no_grad():
            e = self.net((x * 2 - 1).to(self.device)).cpu().numpy()
        return _l2(e)


EMBEDDERS = ("dlib", "facenet")
_CACHE: dict = {}


def get_embedder(name: str = "dlib", weights: Optional[str] = None) -> Embedder:
    """The named embedder (loaded once per process and ``weights``)."""
    key = (name, str(weights) if weights else None)
    if key in _CACHE:
        return _CACHE[key]
    if name == "dlib":
        emb: Embedder = DlibEmbedder(weights)
    elif name == "facenet":
        emb = FacenetEmbedder(weights)
    else:
        raise EmbedderUnavailable(f"Unknown face embedder {name!r}; choose one of {', '.join(EMBEDDERS)}.")
    _CACHE[key] = emb
    return emb
