"""Face embedders and the gallery matcher: an on-disk index with incremental updates. Qt-free.

Two real embedders behind one interface:

* ``dlib`` (default, offline): dlib's face-recognition ResNet (128-D) with its 5-point shape
  predictor, both from the ``face-recognition-models`` package, run by ``dlib-bin``.
* ``facenet``: facenet-pytorch's InceptionResnetV1 trained on VGGFace2 (512-D); its weights are
  downloaded on first use, or read from a local file given as ``weights``.

Both take either canonical 128x128 face frames (:meth:`Embedder.embed_aligned`, used for the
CS metric and for samples) or an arbitrary photo (:meth:`Embedder.embed_image`: the largest
MTCNN face, aligned to the frame first). Embeddings are float32 and L2-normalised, so a dot
product is the cosine.

:class:`GalleryIndex` indexes a folder of known faces (recursively; the identity is the first
sub-folder's name, else the file's stem; one face per image, the largest). Embeddings live in
an SQLite database in the user's cache folder -- never in the gallery, which is evidence and
only read. Files are keyed by path, size, modification time and SHA-256, so re-indexing only
touches new, changed and removed files; every file is committed on its own, so a crash loses
nothing already indexed; several worker processes can embed at once (``update(workers=N)``).
Queries rank the whole gallery in memory (one matrix product) or, for a large gallery, the
candidates a search backend proposes (:mod:`core.search`: faiss on disk, or a Milvus server),
re-scored exactly from the stored embeddings.

Candidates are investigative leads for a trained examiner, never identifications.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from . import faces
from .video import InputError, is_still_file, load_still
from .errors import Cancelled, is_cancelled
from .metrics import l2_normalize, rank_of_true
from .provenance import sha256_file

__all__ = ["EmbedderUnavailable", "Embedder", "DlibEmbedder", "FacenetEmbedder", "get_embedder",
           "EMBEDDERS", "FRAME_BOX_DLIB", "FACENET_WEIGHTS_URL", "facenet_weights_path",
           "default_cache_dir", "Candidate", "ConsensusCandidate", "ConsensusResult", "IndexReport",
           "IndexCancelled", "GalleryIndex", "identity_of", "evaluate_identification",
           "benchmark_query"]

PathLike = Union[str, os.PathLike]

#: where dlib's frontal detector puts the face in the canonical 128 frame (mean over CelebA
#: validation frames and the astronaut: left, top, right, bottom); the shape predictor starts here
FRAME_BOX_DLIB = (30, 46, 96, 112)

#: facenet-pytorch's own download of the VGGFace2 InceptionResnetV1 weights (a state dict)
FACENET_WEIGHTS_URL = ("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
                       "20180402-114759-vggface2.pt")


class EmbedderUnavailable(InputError):
    """The requested face embedder cannot be loaded (message: one sentence for the user)."""


_l2 = l2_normalize


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for fr in frames:
        rgb = np.ascontiguousarray(faces._as_rgb_uint8(np.asarray(fr)))
        if rgb.shape[:2] != (faces.FRAME_SIZE, faces.FRAME_SIZE):
            raise ValueError(f"embed_aligned needs {faces.FRAME_SIZE}x{faces.FRAME_SIZE} face frames, "
                             f"got {rgb.shape[1]}x{rgb.shape[0]}.")
        out.append(rgb)
    return out


class Embedder:
    """Interface: ``name``, ``dim``, ``embed_aligned(frames)``, ``embed_image(rgb)``.

    ``cache_key`` names the embedding space (the gallery index keeps one database per key).
    """

    name: str = ""
    dim: int = 0
    #: faces found by MTCNN less probable than this are ignored by :meth:`embed_image`
    min_prob: float = 0.9

    @property
    def cache_key(self) -> str:
        return self.name

    def embed_aligned(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings ``[N, dim]`` of canonical 128x128 RGB uint8 face frames."""
        raise NotImplementedError

    def embed_image(self, rgb: np.ndarray):
        """(embedding ``[dim]``, :class:`faces.Face`) of the largest face in a photo, or (None, None)."""
        img = faces._as_rgb_uint8(rgb)
        found = faces.detect_faces(img, min_prob=self.min_prob)
        if not found:
            return None, None
        face = found[0]
        frame, _ = faces.align_face(img, face.landmarks)
        return self.embed_aligned([frame])[0], face

    def embed_fn(self):
        """``f(x)`` for :func:`metrics.cs`: float ``[B, 3, 128, 128]`` in [0, 1] -> ``[B, dim]`` tensor."""
        import torch

        def fn(x):
            return torch.from_numpy(self.embed_aligned(faces.to_uint8(x)))

        return fn

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "cache_key": self.cache_key}


def _dlib_model_dir() -> Path:
    # face_recognition_models imports pkg_resources (gone from new setuptools): find its files
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable("The dlib face embedder needs the 'face-recognition-models' "
                                  "package, which is not installed (pip install face-recognition-models).")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibEmbedder(Embedder):
    """dlib's ResNet face descriptor (128-D), offline.

    A frame is described the way dlib describes any face: its 5-point shape predictor runs
    inside :data:`FRAME_BOX_DLIB`, and the 150x150 chip dlib cuts around those points goes
    through the ResNet. Thread-safe (one lock around the dlib models).
    """

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
        self._lock = threading.Lock()
        self.jitter = int(jitter)
        self.model_files = [str(sp), str(rec)]
        self._model_dir = str(d)

    def __reduce__(self):
        # dlib's models do not pickle: a worker process loads them again from the same folder
        return (DlibEmbedder, (self._model_dir, self.jitter))

    def _describe(self, rgb: np.ndarray, box) -> np.ndarray:
        dlib = self._dlib
        rect = dlib.rectangle(*[int(round(v)) for v in box])
        with self._lock:
            shape = self._sp(rgb, rect)
            return np.asarray(self._rec.compute_face_descriptor(rgb, shape, self.jitter), dtype=np.float32)

    def embed_aligned(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        out = [self._describe(rgb, FRAME_BOX_DLIB) for rgb in _check_frames(frames)]
        return _l2(np.stack(out)) if out else np.zeros((0, self.dim), np.float32)


def _torch_home() -> Path:
    """Where facenet-pytorch keeps downloads: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "torch"


def facenet_weights_path() -> Path:
    """The file facenet-pytorch downloads the 'vggface2' weights to (shared with it)."""
    return _torch_home() / "checkpoints" / Path(FACENET_WEIGHTS_URL).name


def _download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically (separate function so tests can replace it)."""
    from torch.hub import download_url_to_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        download_url_to_file(url, tmp, progress=False)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class FacenetEmbedder(Embedder):
    """facenet-pytorch InceptionResnetV1 'vggface2' (512-D): downloaded once, or a local file.

    A frame is cut the way facenet-pytorch's MTCNN cuts a face for this network: the MTCNN
    box (:data:`faces.MTCNN_BOX_IN_FRAME`) plus a 14-pixel margin, resized to 160x160, then
    standardised as ``(v - 127.5) / 128``. A local ``weights`` file may be a ``.safetensors``
    or a ``.pt``/``.pth`` state dict (read with ``weights_only=True``: never unpickled).
    """

    name = "facenet"
    dim = 512
    SIZE = 160
    MARGIN = 14

    def __init__(self, weights: Optional[os.PathLike] = None, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        if weights is not None:
            p = Path(weights).expanduser()
            if not p.is_file():
                raise EmbedderUnavailable(f"The facenet weights file {p} does not exist.")
            self._key = "facenet-" + sha256_file(p)[:12]
        else:
            p = facenet_weights_path()
            if not p.is_file():
                try:
                    _download(FACENET_WEIGHTS_URL, p)
                except Exception as e:  # noqa: BLE001 - offline, proxy, disk full ...
                    raise EmbedderUnavailable(
                        "The facenet 'vggface2' weights are not on this computer and could not be "
                        f"downloaded ({e.__class__.__name__}; is it offline?): download "
                        f"{Path(FACENET_WEIGHTS_URL).name} once from {FACENET_WEIGHTS_URL} and pass it "
                        "as the weights file, or use the offline dlib embedder.") from None
            self._key = "facenet-vggface2"
        net = InceptionResnetV1(pretrained=None, classify=False)
        state = self._read_state(p)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EmbedderUnavailable(f"{p.name} does not hold InceptionResnetV1 weights "
                                      f"({len(missing)} missing, {len(unexpected)} unexpected tensors).")
        self._torch = torch
        self.net = net.eval().to(device)
        self.device = device
        self.weights = str(p)
        self._lock = threading.Lock()
        self._init_args = (str(p) if weights is not None else None, device)
        x0, y0, x1, y1 = self._crop_box()
        # frame -> 160x160 input (facenet-pytorch stretches the box to a square as well)
        self._matrix = np.array([[self.SIZE / (x1 - x0), 0.0, -x0 * self.SIZE / (x1 - x0)],
                                 [0.0, self.SIZE / (y1 - y0), -y0 * self.SIZE / (y1 - y0)]])

    @property
    def cache_key(self) -> str:
        return self._key

    def __reduce__(self):  # a worker process reads the same weights file
        return (FacenetEmbedder, self._init_args)

    @classmethod
    def _crop_box(cls) -> tuple[float, float, float, float]:
        cx, cy, bw, bh = faces.MTCNN_BOX_IN_FRAME
        mx = cls.MARGIN * bw / (cls.SIZE - cls.MARGIN)
        my = cls.MARGIN * bh / (cls.SIZE - cls.MARGIN)
        return (cx - bw / 2 - mx / 2, cy - bh / 2 - my / 2, cx + bw / 2 + mx / 2, cy + bh / 2 + my / 2)

    @staticmethod
    def _read_state(p: Path) -> dict:
        import torch

        try:
            if p.suffix.lower() == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(p), device="cpu")
            else:
                state = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            raise EmbedderUnavailable(f"{p.name} could not be read as a weights file (a state dict of "
                                      "tensors in .pt/.pth or .safetensors form is needed).") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise EmbedderUnavailable(f"{p.name} is not a state dict of tensors.")
        return state

    def embed_aligned(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        import cv2

        torch = self._torch
        rgbs = _check_frames(frames)
        if not rgbs:
            return np.zeros((0, self.dim), np.float32)
        crops = [cv2.warpAffine(f, self._matrix, (self.SIZE, self.SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE) for f in rgbs]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
        x = (x - 127.5) / 128.0
        with self._lock, torch.no_grad():
            e = self.net(x.to(self.device)).cpu().numpy()
        return _l2(e)


EMBEDDERS = ("dlib", "facenet")
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name: str = "dlib", weights: Optional[str] = None) -> Embedder:
    """The named embedder (loaded once per process and ``weights``).

    ``weights``: for ``dlib`` a folder holding its model files (default: the
    face-recognition-models package); for ``facenet`` a local weights file (default: the
    'vggface2' download). Raises :class:`EmbedderUnavailable` with one sentence.
    """
    key = (name, str(weights) if weights else None)
    with _CACHE_LOCK:
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


# ==========================================================================================
# The gallery index
# ==========================================================================================
#: 2: a ``changes`` log (kept by triggers) that search backends replay; 1 is migrated in place
SCHEMA_VERSION = 2


def default_cache_dir() -> Path:
    """Where gallery indexes live: the user cache folder (``$XDG_CACHE_HOME`` respected).

    Linux and others: ``$XDG_CACHE_HOME/sdesr_gui/galleries`` (default ``~/.cache``); macOS:
    ``~/Library/Caches/sdesr_gui/galleries``; Windows: ``%LOCALAPPDATA%\\sdesr_gui\\cache\\galleries``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):
        return Path(xdg).expanduser() / "sdesr_gui" / "galleries"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "sdesr_gui" / "cache" / "galleries"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sdesr_gui" / "galleries"
    return Path.home() / ".cache" / "sdesr_gui" / "galleries"


def identity_of(rel: PathLike) -> str:
    """Identity of a gallery file from its path relative to the gallery: the first sub-folder's
    name (``Alice/2019/a.jpg`` -> ``Alice``), else the file's stem (``Bob.jpg`` -> ``Bob``)."""
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else Path(rel).stem


_is_cancelled = is_cancelled


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One gallery face: ``identity``, ``file`` (relative to the gallery, '/' separators) and
    ``score`` (cosine similarity to the probe)."""

    identity: str
    file: str
    score: float

    def to_dict(self) -> dict:
        return {"identity": self.identity, "file": self.file, "score": round(float(self.score), 6)}


@dataclasses.dataclass
class ConsensusCandidate:
    """An identity ranked over several samples of one probe.

    ``scores``/``ranks``: per sample, the identity's score (its best gallery face) and its rank
    (1 = best) among all gallery identities; ``mean_score`` orders the consensus;
    ``rank1_frequency`` is the share of samples for which it is the best candidate. ``file`` is
    its gallery face with the highest mean score.
    """

    identity: str
    file: str
    mean_score: float
    std_score: float
    rank1_frequency: float
    mean_rank: float
    scores: list[float]
    ranks: list[int]

    @property
    def score(self) -> float:
        return self.mean_score

    def to_dict(self) -> dict:
        return {"identity": self.identity, "file": self.file, "mean_score": round(self.mean_score, 6),
                "std_score": round(self.std_score, 6), "rank1_frequency": round(self.rank1_frequency, 6),
                "mean_rank": round(self.mean_rank, 4), "scores": [round(s, 6) for s in self.scores],
                "ranks": list(self.ranks)}


@dataclasses.dataclass
class ConsensusResult:
    """Several samples of one probe against the gallery (identity level)."""

    candidates: list[ConsensusCandidate]
    per_sample: list[list[Candidate]]
    samples: int

    @property
    def rank1_agreement(self) -> float:
        """Share of samples whose best candidate is the consensus's best (0 when empty)."""
        return self.candidates[0].rank1_frequency if self.candidates else 0.0

    def stability(self) -> dict:
        """How much the samples agree: rank-1 agreement, distinct rank-1 identities, top-K overlap."""
        out: dict[str, Any] = {"samples": self.samples}
        if not self.candidates:
            return out
        top = {c.identity for c in self.candidates}
        firsts = [lst[0].identity for lst in self.per_sample if lst]
        out["consensus_rank1"] = self.candidates[0].identity
        out["rank1_agreement"] = round(self.rank1_agreement, 4)
        out["distinct_rank1"] = len(set(firsts))
        out["top_k_overlap"] = round(float(np.mean([len(top & {c.identity for c in lst}) / len(top)
                                                    for lst in self.per_sample])), 4)
        return out

    def to_dict(self) -> dict:
        return {"samples": self.samples, "stability": self.stability(),
                "candidates": [c.to_dict() for c in self.candidates],
                "per_sample": [[c.to_dict() for c in lst] for lst in self.per_sample]}


@dataclasses.dataclass
class IndexReport:
    """What an update did. ``skipped``: (file, reason) for every gallery file without a face
    in the index (unreadable, not an image, no face found), new or remembered."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    faces: int = 0
    files: int = 0
    seconds: float = 0.0
    cancelled: bool = False

    def summary(self) -> str:
        s = (f"added {self.added}, updated {self.updated}, removed {self.removed}, unchanged "
             f"{self.unchanged}, skipped {len(self.skipped)}; {self.faces} faces in the index")
        return s + (" (cancelled: what was indexed is kept)" if self.cancelled else "")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        return d


class IndexCancelled(Cancelled):
    """The update was cancelled; everything indexed before is committed (``report`` says what)."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__("Indexing was cancelled; what was indexed so far is kept.")
        self.report = report


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    identity TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    embedding BLOB,
    face TEXT,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
"""

# Every face that enters, changes in or leaves the index is logged with a growing sequence number
# (``op`` 1: present now, 0: gone); search backends (core.search) catch up by replaying the log.
# A REPLACE deletes the old row first: with recursive_triggers on, that is logged too.
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER NOT NULL,
                                    op INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS files_identity ON files (identity);
CREATE TRIGGER IF NOT EXISTS files_face_added AFTER INSERT ON files
    WHEN NEW.status = 'face' AND NEW.embedding IS NOT NULL
    BEGIN INSERT INTO changes (id, op) VALUES (NEW.rowid, 1); END;
CREATE TRIGGER IF NOT EXISTS files_face_removed AFTER DELETE ON files
    WHEN OLD.status = 'face' AND OLD.embedding IS NOT NULL
    BEGIN INSERT INTO changes (id, op) VALUES (OLD.rowid, 0); END;
CREATE TRIGGER IF NOT EXISTS files_face_changed AFTER UPDATE OF status, embedding ON files
    BEGIN
        INSERT INTO changes (id, op) SELECT OLD.rowid, 0 WHERE OLD.status = 'face' AND OLD.embedding IS NOT NULL;
        INSERT INTO changes (id, op) SELECT NEW.rowid, 1 WHERE NEW.status = 'face' AND NEW.embedding IS NOT NULL;
    END;
"""


@dataclasses.dataclass
class _Matrix:
    generation: int
    files: list[str]
    identities: list[str]
    sha256: list[str]
    emb: np.ndarray  # [N, D] float32, L2-normalised
    id_names: list[str]
    id_code: np.ndarray  # [N] identity index
    order: np.ndarray  # files sorted by identity
    starts: np.ndarray  # first position in ``order`` of each identity


@dataclasses.dataclass(frozen=True)
class _Job:
    """A gallery file to embed: where it is and what the database will key it by."""

    rel: str
    path: str
    size: int
    mtime: int
    sha: str
    known: bool


def _embed_path(embedder: Embedder, path) -> tuple[str, Optional[str], Optional[bytes], Optional[str]]:
    """(status, reason, embedding blob, face JSON) of the largest face in an image file."""
    try:
        img = load_still(Path(path))
    except InputError as e:
        return "unreadable", str(e), None, None
    emb, face = embedder.embed_image(img)
    if emb is None:
        return "noface", "no face was found", None, None
    v = _l2(np.asarray(emb, dtype=np.float32).reshape(-1))
    if v.shape[0] != int(embedder.dim):
        raise ValueError(f"the embedder gave {v.shape[0]} values, not {embedder.dim}")
    return "face", None, v.astype("<f4").tobytes(), json.dumps(face.to_dict()) if face is not None else None


_WORKER_EMBEDDER: Optional[Embedder] = None


def _worker_start(embedder: Embedder) -> None:
    """A worker process: one thread for the math (the workers are the parallelism)."""
    global _WORKER_EMBEDDER
    import multiprocessing as mp

    parent = mp.parent_process()
    if parent is not None:  # the indexing process was killed: do not linger as an orphan
        def watch() -> None:
            parent.join()
            os._exit(0)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER_EMBEDDER = embedder


def _worker_embed(path: str):
    return _embed_path(_WORKER_EMBEDDER, path)


class _EmbedPool:
    """Worker processes embedding gallery files (spawned: safe with threads, the same on every OS).

    At most two jobs a worker are in flight, so a cancel stops quickly and a kill loses at most
    those (they were not stored: the next update embeds them)."""

    def __init__(self, embedder: Embedder, workers: int) -> None:
        import concurrent.futures as cf
        import concurrent.futures.process  # noqa: F401 - BrokenProcessPool
        import multiprocessing as mp

        self._cf = cf
        self.workers = int(workers)
        self._ex = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                          initializer=_worker_start, initargs=(embedder,))
        self._jobs: dict = {}

    def submit(self, job: _Job) -> None:
        self._jobs[self._ex.submit(_worker_embed, job.path)] = job

    def full(self) -> bool:
        return len(self._jobs) >= 2 * self.workers

    def pending(self) -> int:
        return len(self._jobs)

    def results(self, block: bool):
        """(job, result) of the finished jobs (waiting for at least one when ``block``)."""
        if not self._jobs:
            return
        done, _ = self._cf.wait(list(self._jobs), timeout=None if block else 0,
                                return_when=self._cf.FIRST_COMPLETED)
        for fut in done:
            job = self._jobs.pop(fut)
            try:
                result = fut.result()
            except self._cf.process.BrokenProcessPool:
                from .errors import SdesrError

                raise SdesrError("An indexing worker process stopped unexpectedly (out of memory, or "
                                 "killed); every face stored so far is kept: index again to go on, with "
                                 "fewer workers if memory is short.") from None
            yield job, result

    def close(self) -> None:
        self._ex.shutdown(wait=False, cancel_futures=True)


class GalleryIndex:
    """An incremental face index of a gallery folder, stored outside it.

    ``GalleryIndex(folder, embedder, cache_dir=None, backend="exact", backend_options=None)``:
    ``cache_dir`` defaults to :func:`default_cache_dir`; it may not lie inside the gallery;
    ``backend`` is one of :data:`search.BACKENDS` (options: :func:`search.make_backend`). One SQLite database per
    (gallery folder, embedding space). :meth:`update` scans the folder; :meth:`query` and
    :meth:`query_samples` rank it. ``len(index)`` is the number of faces indexed. Safe to
    query from one thread while nothing updates it from another.
    """

    def __init__(self, folder: PathLike, embedder: Embedder, cache_dir: Optional[PathLike] = None,
                 backend: str = "exact", backend_options: Optional[dict] = None) -> None:
        from .provenance import is_inside
        from .search import BACKENDS

        if backend not in BACKENDS:
            raise InputError(f"Unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}.")

        folder = Path(folder).expanduser()
        if not folder.exists():
            raise InputError(f"The gallery folder {folder} does not exist.", folder)
        if not folder.is_dir():
            raise InputError(f"The gallery {folder} is not a folder.", folder)
        self.folder = folder.resolve()
        self.embedder = embedder
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        if is_inside(cache, self.folder):
            raise InputError(f"The index cache folder {cache} is inside the gallery folder; galleries "
                             "are evidence and are never written to, so choose a cache folder elsewhere.",
                             cache)
        self.cache_dir = cache
        key = str(getattr(embedder, "cache_key", None) or embedder.name)
        # one database per (resolved gallery folder, embedding space)
        digest = hashlib.sha256((str(self.folder) + "\0" + key).encode("utf-8")).hexdigest()
        self.db_path = cache / f"{digest}.sqlite"
        self._key = key
        self._lock = threading.RLock()
        self._matrix: Optional[_Matrix] = None
        self.backend_name = backend
        self.backend_options = dict(backend_options or {})
        self._backend = None  # the SearchBackend once opened (None for exact search)
        self._backend_ready = False
        self.resolved_backend = backend if backend != "auto" else None
        self._tls = threading.local()

    # ---------------------------------------------------------------- storage
    def _connect(self) -> sqlite3.Connection:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.db_path), timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA recursive_triggers=ON")
        con.executescript(_SCHEMA)
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        want = {"schema": str(SCHEMA_VERSION), "embedder": self._key, "dim": str(int(self.embedder.dim))}
        same_space = meta.get("embedder") == self._key and meta.get("dim") == want["dim"]
        if same_space and meta.get("schema") == "1":
            # schema 1 -> 2: keep every embedding; log the faces already there for the backends
            with con:
                con.executescript(_SCHEMA_V2)
                con.execute("INSERT INTO changes (id, op) SELECT rowid, 1 FROM files "
                            "WHERE status = 'face' AND embedding IS NOT NULL")
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
                con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        else:
            con.executescript(_SCHEMA_V2)
            if any(meta.get(k) != v for k, v in want.items()):
                # another embedding space (or schema): start again, the old vectors are useless
                with con:
                    con.execute("DELETE FROM files")
                    con.execute("DELETE FROM meta")
                    con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                    [*want.items(), ("folder", str(self.folder)), ("generation", "0"),
                                     ("store_id", uuid.uuid4().hex)])
        return con

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for reading (kept open: a query makes several small reads; in
        autocommit mode each statement sees the latest committed state). The database exists."""
        con = getattr(self._tls, "con", None)
        if con is None:
            con = sqlite3.connect(str(self.db_path), timeout=30.0)
            self._tls.con = con
        return con

    @staticmethod
    def _generation(con: sqlite3.Connection) -> int:
        row = con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump(con: sqlite3.Connection) -> None:
        con.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'generation'")

    def _scan(self) -> list[tuple[str, Path]]:
        """Gallery image files (recursive, hidden entries and symlinked folders skipped), sorted."""
        out: list[tuple[str, Path]] = []
        for root, dirs, files in os.walk(self.folder, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or not is_still_file(name):
                    continue
                p = Path(root) / name
                out.append((p.relative_to(self.folder).as_posix(), p))
        out.sort(key=lambda t: t[0])
        return out

    # ---------------------------------------------------------------- indexing
    def update(self, progress: Optional[Callable[..., None]] = None, cancel=None,
               raise_on_cancel: bool = False, workers: int = 1) -> IndexReport:
        """Bring the index up to date with the folder; returns an :class:`IndexReport`.

        ``progress(done, total, file)`` is called per file; ``cancel`` (an Event or a callable)
        stops between files: the report then has ``cancelled=True`` (or, with
        ``raise_on_cancel``, :class:`IndexCancelled` carries it) -- everything indexed before
        stays committed and removed files are forgotten by the next full update. Unchanged
        files (same size and mtime, or same SHA-256) are neither read nor embedded again; a
        renamed copy of an indexed file reuses its embedding.

        ``workers`` > 1 embeds in that many worker processes (each loads the embedder once);
        this process alone writes the database, one commit per file as it comes back, so a
        run that is cancelled or killed keeps every face it stored and the next update goes on
        from there (a file is keyed by its path: it can never be stored twice).
        """
        t0 = time.perf_counter()
        rep = IndexReport()
        with self._lock:
            files = self._scan()
            rep.files = len(files)
            total = len(files)
            con = self._connect()
            pool = _EmbedPool(self.embedder, int(workers)) if int(workers) > 1 else None
            try:
                known = {r[0]: r for r in con.execute(
                    "SELECT path, size, mtime_ns, sha256, status, reason FROM files")}
                present = {rel for rel, _ in files}
                done = 0

                def finished(rel: str) -> None:
                    nonlocal done
                    done += 1
                    if progress is not None:
                        progress(done, total, rel)

                def store_ready(block: bool) -> None:
                    for job, result in pool.results(block):
                        self._store_one(con, job, result, rep)
                        finished(job.rel)

                for rel, path in files:
                    if _is_cancelled(cancel):
                        break
                    job = self._prepare_one(con, rel, path, known.get(rel), rep)
                    if job is None:
                        finished(rel)
                    elif pool is None:
                        self._store_one(con, job, _embed_path(self.embedder, path), rep)
                        finished(rel)
                    else:
                        pool.submit(job)
                        store_ready(block=pool.full())
                while pool is not None and pool.pending() and not _is_cancelled(cancel):
                    store_ready(block=True)
                if _is_cancelled(cancel):
                    rep.cancelled = True
                    rep.seconds = time.perf_counter() - t0
                    rep.faces = con.execute("SELECT COUNT(*) FROM files WHERE status = 'face'").fetchone()[0]
                    self._matrix = None
                    if raise_on_cancel:
                        raise IndexCancelled(rep)
                    return rep
                gone = [p for p in known if p not in present]
                if gone:
                    with con:
                        con.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
                        self._bump(con)
                    rep.removed = len(gone)
                rep.faces = con.execute("SELECT COUNT(*) FROM files WHERE status = 'face'").fetchone()[0]
            finally:
                if pool is not None:
                    pool.close()
                con.close()
            self._matrix = None
        rep.seconds = time.perf_counter() - t0
        return rep

    def _prepare_one(self, con: sqlite3.Connection, rel: str, path: Path, row,
                     rep: IndexReport) -> Optional["_Job"]:
        """Handle a file that needs no embedding (unchanged, touched, a copy, unreadable) and
        return None, or return the job of embedding it."""
        try:
            st = path.stat()
        except OSError as e:
            rep.skipped.append((rel, f"cannot be read ({e.strerror or 'OS error'})"))
            return None
        size, mtime = int(st.st_size), int(st.st_mtime_ns)
        if row is not None and row[1] == size and row[2] == mtime:
            self._count_known(row, rel, rep)
            return None
        try:
            sha = sha256_file(path)
        except OSError as e:
            rep.skipped.append((rel, f"cannot be read ({e.strerror or 'OS error'})"))
            return None
        if row is not None and row[3] == sha:  # touched, not changed
            with con:
                con.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime, rel))
            self._count_known(row, rel, rep)
            return None
        job = _Job(rel, str(path), size, mtime, sha, row is not None)
        same = con.execute("SELECT embedding, face FROM files WHERE sha256 = ? AND status = 'face' "
                           "AND embedding IS NOT NULL LIMIT 1", (sha,)).fetchone()
        if same is not None:  # a copy or a renamed file: its face is known already
            self._store_one(con, job, ("face", None, same[0], same[1]), rep)
            return None
        return job

    def _store_one(self, con: sqlite3.Connection, job: "_Job", result, rep: IndexReport) -> None:
        status, reason, blob, face_json = result
        with con:
            con.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, identity, status, reason, "
                "embedding, face, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.rel, job.size, job.mtime, job.sha, identity_of(job.rel), status, reason, blob, face_json,
                 time.time()))
            self._bump(con)
        if status == "face":
            if job.known:
                rep.updated += 1
            else:
                rep.added += 1
        else:
            rep.skipped.append((job.rel, reason or status))

    @staticmethod
    def _count_known(row, rel: str, rep: IndexReport) -> None:
        if row[4] == "face":
            rep.unchanged += 1
        else:
            rep.skipped.append((rel, row[5] or row[4]))

    def _write_synthetic(self, rows: Iterable[tuple[str, str, np.ndarray]]) -> None:
        """Store (file, identity, embedding) rows without files behind them (benchmarks only)."""
        with self._lock:
            con = self._connect()
            try:
                with con:
                    con.executemany(
                        "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, identity, status, reason, "
                        "embedding, face, indexed_at) VALUES (?, 0, 0, ?, ?, 'face', NULL, ?, NULL, 0)",
                        [(f, hashlib.sha256(f.encode()).hexdigest(), ident,
                          _l2(np.asarray(e, np.float32)).astype("<f4").tobytes()) for f, ident, e in rows])
                    self._bump(con)
            finally:
                con.close()
            self._matrix = None

    # ---------------------------------------------------------------- reading
    def _load(self) -> _Matrix:
        """The in-memory matrix, reloaded when the database changed (also by another process)."""
        with self._lock:
            if not self.db_path.exists():
                gen = -1
                rows: list = []
            else:
                # a cheap look at the generation first: most queries find the matrix current
                if self._matrix is not None and self._matrix.generation >= 0:
                    try:
                        peek = sqlite3.connect(str(self.db_path), timeout=30.0)
                        try:
                            if self._generation(peek) == self._matrix.generation:
                                return self._matrix
                        finally:
                            peek.close()
                    except sqlite3.Error:
                        pass
                con = self._connect()
                try:
                    gen = self._generation(con)
                    if self._matrix is not None and self._matrix.generation == gen:
                        return self._matrix
                    rows = con.execute("SELECT path, identity, sha256, embedding FROM files "
                                       "WHERE status = 'face' AND embedding IS NOT NULL ORDER BY path").fetchall()
                finally:
                    con.close()
            if self._matrix is not None and self._matrix.generation == gen:
                return self._matrix
            self._matrix = self._matrix_from_rows(gen, rows)
            return self._matrix

    def _matrix_from_rows(self, gen: int, rows) -> _Matrix:
        """A :class:`_Matrix` of (path, identity, sha256, embedding blob) rows."""
        dim = int(self.embedder.dim)
        emb = np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4").reshape(len(rows), dim) \
            if rows else np.zeros((0, dim), np.float32)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        idents = [r[1] for r in rows]
        names = sorted(set(idents))
        code_of = {n: i for i, n in enumerate(names)}
        code = np.array([code_of[i] for i in idents], dtype=np.int64)
        order = np.argsort(code, kind="stable")
        starts = np.searchsorted(code[order], np.arange(len(names))) if names else np.zeros(0, np.int64)
        return _Matrix(gen, [r[0] for r in rows], idents, [r[2] for r in rows], emb, names, code, order, starts)

    # ---------------------------------------------------------------- the store, as backends read it
    def store_id(self) -> str:
        """A random id given to this database when it was made (a backend built from another
        database, or from this one before it was started again, is rebuilt)."""
        if not self.db_path.exists():
            self._connect().close()
        row = self._reader().execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        return row[0] if row else ""

    def last_change(self) -> int:
        """Sequence number of the last logged change (0: none)."""
        if not self.db_path.exists():
            return 0
        try:
            row = self._reader().execute("SELECT MAX(seq) FROM changes").fetchone()
            return int(row[0] or 0)
        except sqlite3.OperationalError:  # not migrated yet
            return 0

    def changes_after(self, seq: int, limit: int = 100_000) -> list[tuple[int, int]]:
        """(seq, face id) of the logged changes after ``seq``, oldest first, at most ``limit``."""
        return self._reader().execute("SELECT seq, id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (int(seq), int(limit))).fetchall()

    def face_count(self) -> int:
        if not self.db_path.exists():
            return 0
        return int(self._reader().execute("SELECT COUNT(*) FROM files WHERE status = 'face'").fetchone()[0])

    def _face_rows(self, where: str, keys: Sequence, cols: str = "rowid, embedding") -> list:
        """Face rows whose ``where`` column is in ``keys`` (in chunks: SQLite's variable limit)."""
        out: list = []
        if not len(keys):
            return out
        con = self._reader()
        for k in range(0, len(keys), 900):
            part = list(keys[k:k + 900])
            out += con.execute(f"SELECT {cols} FROM files WHERE status = 'face' AND embedding IS NOT NULL "
                               f"AND {where} IN ({','.join('?' * len(part))})", part).fetchall()
        return out

    def _vecs(self, blobs) -> np.ndarray:
        dim = int(self.embedder.dim)
        if not blobs:
            return np.zeros((0, dim), np.float32)
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)

    def vectors_of(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of the faces among ``ids`` that are in the index now."""
        rows = self._face_rows("rowid", [int(i) for i in np.asarray(ids).reshape(-1)])
        return np.array([r[0] for r in rows], np.int64), self._vecs([r[1] for r in rows])

    def iter_vectors(self, batch: int = 100_000):
        """Every face as (ids, embeddings) batches, in id order."""
        last = -1
        con = sqlite3.connect(str(self.db_path), timeout=30.0)  # its own: the caller may read meanwhile
        try:
            while True:
                rows = con.execute("SELECT rowid, embedding FROM files WHERE rowid > ? AND status = 'face' "
                                   "AND embedding IS NOT NULL ORDER BY rowid LIMIT ?", (last, int(batch))).fetchall()
                if not rows:
                    return
                last = rows[-1][0]
                yield np.array([r[0] for r in rows], np.int64), self._vecs([r[1] for r in rows])
        finally:
            con.close()

    def sample_vectors(self, m: int, seed: int = 0) -> np.ndarray:
        """About ``m`` embeddings from over the whole index (runs of rows from random places)."""
        dim = int(self.embedder.dim)
        if m <= 0 or not self.db_path.exists():
            return np.zeros((0, dim), np.float32)
        con = sqlite3.connect(str(self.db_path), timeout=30.0)
        try:
            lo, hi = con.execute("SELECT MIN(rowid), MAX(rowid) FROM files").fetchone()
            if lo is None:
                return np.zeros((0, dim), np.float32)
            runs = int(min(256, max(1, m)))
            per = -(-int(m) // runs)
            starts = np.sort(np.random.default_rng(seed).integers(lo, hi + 1, runs))
            seen: set = set()
            blobs = []
            for a in starts:
                for rid, blob in con.execute("SELECT rowid, embedding FROM files WHERE rowid >= ? AND status = 'face' "
                                             "AND embedding IS NOT NULL ORDER BY rowid LIMIT ?", (int(a), per)):
                    if rid not in seen:
                        seen.add(rid)
                        blobs.append(blob)
        finally:
            con.close()
        return self._vecs(blobs)

    # ---------------------------------------------------------------- the search backend
    def search_backend(self, progress=None, cancel=None):
        """The :class:`search.SearchBackend` in use, synced with the database (None: exact search).

        "auto" picks faiss once the index holds :data:`search.AUTO_ANN_FROM` faces (or a faiss
        index is already there) and faiss is installed. Building or catching up may take a while
        for a big gallery: ``progress(stage, fraction)`` and ``cancel`` follow it.
        """
        from . import search

        with self._lock:
            if not self._backend_ready:
                name = self.backend_name
                stem = self.db_path.with_suffix("")
                if name == "auto":
                    has_faiss = importlib.util.find_spec("faiss") is not None
                    big = Path(str(stem) + ".faiss").exists() or self.face_count() >= search.AUTO_ANN_FROM
                    name = "faiss" if (has_faiss and big) else "exact"
                self._backend = search.make_backend(name, stem, int(self.embedder.dim), self.backend_options)
                self.resolved_backend = name
                self._backend_ready = True
            if self._backend is not None:
                self._backend.sync(self, progress=progress, cancel=cancel)
            return self._backend

    def backend_info(self) -> dict:
        be = self.search_backend()
        return {"backend": "exact", "faces": len(self._load().files)} if be is None else be.info()

    def _ranking_matrix(self, q: np.ndarray, top_k: int, exclude: Optional[Iterable[str]]) -> _Matrix:
        """The faces a query ranks: the whole gallery (exact search) or, with a search backend,
        the faces it proposes for any of the probes ``q`` (:func:`search.candidates_for`
        ``top_k``) plus every face of their identities (an identity scores by its best face;
        and a face of a proposed identity is often a near neighbour the 8-bit scores missed),
        each with its exact stored embedding (so scores are true cosines)."""
        from .search import candidates_for

        be = self.search_backend()
        if be is None:
            return self._load()
        ex = list(exclude or ())
        _, ids = be.search(q, candidates_for(top_k) + len(ex))
        found = np.unique(ids[ids >= 0])
        rows = self._face_rows("rowid", [int(i) for i in found], "rowid, path, identity, sha256, embedding")
        idents = sorted({r[2] for r in rows})
        more = self._face_rows("identity", idents, "rowid, path, identity, sha256, embedding")
        by_id = {r[0]: r[1:] for r in rows + more}
        return self._matrix_from_rows(-2, [by_id[k] for k in sorted(by_id, key=lambda k: by_id[k][0])])

    def __len__(self) -> int:
        be = self.search_backend()
        return len(self._load().files) if be is None else be.count()

    def identities(self) -> list[str]:
        """The distinct identities with at least one indexed face."""
        return list(self._load().id_names)

    def entries(self) -> tuple[list[str], list[str], list[str], np.ndarray]:
        """(files, identities, sha256s, embeddings [N, D]) of every indexed face."""
        m = self._load()
        return list(m.files), list(m.identities), list(m.sha256), m.emb.copy()

    def skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of the indexed files without a face, as of the last update."""
        if not self.db_path.exists():
            return []
        con = self._connect()
        try:
            return [(r[0], r[1] or r[2]) for r in con.execute(
                "SELECT path, reason, status FROM files WHERE status != 'face' ORDER BY path")]
        finally:
            con.close()

    def path_of(self, file: str) -> Path:
        """Absolute path of a gallery file named by a :class:`Candidate`."""
        return self.folder / Path(file)

    @staticmethod
    def _probe(embedding, dim: int) -> np.ndarray:
        q = np.asarray(embedding, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != dim:
            raise ValueError(f"expected embeddings of {dim} values, got shape {tuple(np.shape(embedding))}")
        return _l2(q)

    def _scores(self, m: _Matrix, q: np.ndarray, exclude: Optional[Iterable[str]]) -> np.ndarray:
        s = q @ m.emb.T  # [S, N]
        if exclude:
            ex = set(exclude)
            cols = [i for i, f in enumerate(m.files) if f in ex]
            if cols:
                s[:, cols] = -np.inf
        return s

    @staticmethod
    def _identity_scores(m: _Matrix, s: np.ndarray) -> np.ndarray:
        """[S, N] face scores -> [S, I] identity scores (best face per identity)."""
        if not m.id_names:
            return np.zeros((s.shape[0], 0), np.float32)
        return np.maximum.reduceat(s[:, m.order], m.starts, axis=1)

    @staticmethod
    def _best_file(m: _Matrix, s_row: np.ndarray, ident: int) -> int:
        end = m.starts[ident + 1] if ident + 1 < len(m.starts) else len(m.order)
        members = m.order[m.starts[ident]:end]
        return int(members[int(np.argmax(s_row[members]))])

    def query(self, embedding, top_k: int = 10, per_identity: bool = False,
              exclude: Optional[Iterable[str]] = None) -> list[Candidate]:
        """The ``top_k`` gallery faces most similar to one probe embedding, best first.

        ``per_identity``: at most one face (the best) per identity. ``exclude``: gallery files
        to leave out (e.g. the probe photo itself).
        """
        q = self._probe(embedding, int(self.embedder.dim))
        if top_k < 1:
            return []
        m = self._ranking_matrix(q, top_k, exclude)
        if not m.files:
            return []
        s = self._scores(m, q, exclude)[0]
        if per_identity:
            ids = self._identity_scores(m, s[None])[0]
            k = min(int(top_k), len(ids))
            top = np.argpartition(-ids, k - 1)[:k]
            top = top[np.lexsort((top, -ids[top]))]
            out = []
            for j in top:
                if not np.isfinite(ids[j]):
                    continue
                i = self._best_file(m, s, int(j))
                out.append(Candidate(m.identities[i], m.files[i], float(s[i])))
            return out
        k = min(int(top_k), len(s))
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.lexsort((top, -s[top]))]
        return [Candidate(m.identities[i], m.files[i], float(s[i])) for i in top if np.isfinite(s[i])]

    def query_samples(self, embeddings, top_k: int = 10,
                      exclude: Optional[Iterable[str]] = None) -> ConsensusResult:
        """Several samples ``[S, D]`` of one probe: a consensus over identities.

        For every identity: its score per sample (its best face), the mean and spread over the
        samples, its rank per sample and how often it is rank 1. With a search backend the
        identities ranked are those of the faces it proposes for any sample (their scores are
        exact; a rank is among those identities). The consensus lists the
        ``top_k`` identities by mean score; ``per_sample`` holds each sample's own top-K.
        """
        q = self._probe(embeddings, int(self.embedder.dim))
        n_s = q.shape[0]
        m = self._ranking_matrix(q, top_k, exclude) if top_k >= 1 else self._load()
        if not m.files or top_k < 1:
            return ConsensusResult([], [[] for _ in range(n_s)], n_s)
        s = self._scores(m, q, exclude)  # [S, N]
        ids = self._identity_scores(m, s)  # [S, I]
        k = min(int(top_k), ids.shape[1])
        finite = np.where(np.isfinite(ids), ids, np.nan)
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(finite, axis=0) if n_s > 1 else finite[0]
        mean = np.where(np.isfinite(mean), mean, -np.inf)
        top = np.argpartition(-mean, k - 1)[:k]
        top = top[np.lexsort((top, -mean[top]))]
        best = np.argmax(ids, axis=1)  # rank-1 identity per sample
        # the face standing for each identity: its best mean score over the samples
        face_mean = s.mean(axis=0)
        cands = []
        for j in top:
            if not np.isfinite(mean[j]):
                continue
            col = ids[:, j]
            ranks = [int(1 + np.sum(ids[r] > col[r])) for r in range(n_s)]
            cands.append(ConsensusCandidate(
                identity=m.id_names[j], file=m.files[self._best_file(m, face_mean, int(j))],
                mean_score=float(mean[j]), std_score=float(np.nanstd(finite[:, j])),
                rank1_frequency=float(np.mean(best == j)), mean_rank=float(np.mean(ranks)),
                scores=[float(v) for v in col], ranks=ranks))
        per_sample = []
        for r in range(n_s):
            row = ids[r]
            t = np.argpartition(-row, k - 1)[:k]
            t = t[np.lexsort((t, -row[t]))]
            lst = []
            for j in t:
                if np.isfinite(row[j]):
                    i = self._best_file(m, s[r], int(j))
                    lst.append(Candidate(m.id_names[j], m.files[i], float(s[r, i])))
            per_sample.append(lst)
        return ConsensusResult(cands, per_sample, n_s)


# ==========================================================================================
# Evaluation and benchmark
# ==========================================================================================
def evaluate_identification(index: GalleryIndex, probe_embeddings: np.ndarray, probe_ids: Sequence[str],
                            exclude: Optional[Sequence[Iterable[str]]] = None,
                            ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """Closed-set identification (Rank-N) and 1:1 verification (AUC) of probes against a gallery.

    Each gallery identity scores by its best face; ``exclude[i]`` lists gallery files probe
    ``i`` may not match (the probe photo itself). Probes whose identity has no (remaining)
    gallery face are not counted (``open_set``). Verification pairs every counted probe with
    every gallery identity (genuine: the same identity).

    ``probe_embeddings`` is ``[P, D]`` (one embedding per probe) or ``[P, S, D]`` (S samples
    of each probe): then an identity's score is its mean over the samples of its best-face
    score, the consensus :meth:`GalleryIndex.query_samples` ranks by.
    """
    from .metrics import verification_auc

    m = index._load()
    emb = np.asarray(probe_embeddings, dtype=np.float32)
    n_s = emb.shape[1] if emb.ndim == 3 else 1
    flat = emb.reshape(-1, emb.shape[-1]) if emb.ndim == 3 else emb
    q = GalleryIndex._probe(flat, m.emb.shape[1]) if len(probe_ids) else np.zeros((0, 1))
    out: dict[str, Any] = {"probes": len(probe_ids), "gallery_faces": len(m.files),
                           "gallery_identities": len(m.id_names), "samples_per_probe": n_s}
    if not len(probe_ids) or not m.files:
        out.update({f"rank{n}": float("nan") for n in ranks})
        out.update({"counted": 0, "open_set": len(probe_ids), "auc": float("nan")})
        return out
    if q.shape[0] != len(probe_ids) * n_s:
        raise ValueError(f"{q.shape[0]} embeddings for {len(probe_ids)} probes of {n_s} sample(s) each")
    s = q @ m.emb.T  # [P * S, N]
    if exclude is not None:
        col = {f: i for i, f in enumerate(m.files)}
        for r, ex in enumerate(exclude):
            for f in ex or ():
                if f in col:
                    s[r * n_s:(r + 1) * n_s, col[f]] = -np.inf
    ids = GalleryIndex._identity_scores(m, s)
    if n_s > 1:
        ids = ids.reshape(len(probe_ids), n_s, -1).mean(axis=1)
    code = {n: j for j, n in enumerate(m.id_names)}
    rank_list, gen, imp = [], [], []
    for r, pid in enumerate(probe_ids):
        j = code.get(str(pid))
        if j is None or not np.isfinite(ids[r, j]):
            continue
        row = ids[r]
        rank_list.append(rank_of_true(row, j))
        gen.append(float(row[j]))
        others = np.delete(row, j)
        imp.extend(float(v) for v in others[np.isfinite(others)])
    rk = np.array(rank_list)
    out["counted"] = int(rk.size)
    out["open_set"] = len(probe_ids) - int(rk.size)
    for n in ranks:
        out[f"rank{n}"] = float(np.mean(rk <= n)) if rk.size else float("nan")
    try:
        out["auc"] = verification_auc(gen + imp, [True] * len(gen) + [False] * len(imp))
    except ValueError:
        out["auc"] = float("nan")
    out["ranks"] = rank_list
    out["genuine_scores"] = [round(g, 6) for g in gen]
    return out


def benchmark_query(*args, **kwargs) -> dict:
    """Build, load and query a synthetic gallery (see :func:`gallery_bench.benchmark_query`)."""
    from .gallery_bench import benchmark_query as bench

    return bench(*args, **kwargs)
