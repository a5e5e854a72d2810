"""Search backends for a gallery index: exact (numpy), faiss (an on-disk index), milvus (a server).

The gallery's SQLite database (:class:`gallery.GalleryIndex`) is the one source of truth: every
face embedding lives there, and every change to it (a face added, changed or removed) is written
to its ``changes`` log by SQLite triggers, each change with a growing sequence number. A search
backend is a derived copy that remembers the last change it applied and catches up by replaying
the log (:meth:`SearchBackend.sync`); deleted, it is rebuilt from the database. So the
embeddings are always reproducible from the cache, and a backend can never hold a face the
gallery no longer has once it is synced.

* ``exact`` -- the whole gallery in memory, one matrix product per query (the reference for
  recall; the default below :data:`AUTO_ANN_FROM` faces). Implemented by the gallery itself.
* ``faiss`` -- a faiss index persisted beside the SQLite file: exact (``Flat``) for small
  galleries, an inverted file with 8-bit scalar-quantised vectors (``IVF{nlist},SQ8``) above
  :data:`IVF_FROM` faces. Its ``nprobe`` is tuned when it is built, on stored faces used as
  probes, to the smallest value reaching :data:`RECALL_TARGET` recall@10 against exact search;
  both are recorded beside the index.
* ``milvus`` -- a collection per gallery and embedder on a Milvus server given by URI (a
  ``http://host:19530`` server or cluster, or a local ``.db`` file for milvus-lite).

Backends return candidate face ids with approximate scores; the gallery re-scores every
candidate exactly from its stored embedding before it ranks them, so a score shown to the
analyst (and its calibrated false-match rate) is always the true cosine.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

import numpy as np

from .errors import Cancelled, is_cancelled
from .provenance import write_json_atomic
from .video import InputError

__all__ = ["BACKENDS", "AUTO_ANN_FROM", "IVF_FROM", "RECALL_TARGET", "BackendUnavailable", "FaceStore",
           "SearchBackend", "FaissBackend", "MilvusBackend", "make_backend", "faiss_spec_for", "recall_at"]

#: the choices offered to the user; "auto" is exact below AUTO_ANN_FROM faces, faiss from there
BACKENDS = ("auto", "exact", "faiss", "milvus")
#: faces from which "auto" uses faiss (below: exact search loads in well under a second)
AUTO_ANN_FROM = 200_000
#: faces from which the faiss backend uses an inverted file (below: exact Flat search)
IVF_FROM = 50_000
#: recall@10 against exact search that the faiss backend's nprobe is tuned to reach
RECALL_TARGET = 0.97
#: faces a backend proposes per probe for a top-k query (at least): the gallery re-scores them
#: exactly, so 8-bit scores only have to bring the true top-k into this longer list
CANDIDATES_MIN = 50
CANDIDATES_PER_K = 5


def candidates_for(top_k: int) -> int:
    """How many faces to ask a backend for when the analyst wants ``top_k``."""
    return max(CANDIDATES_MIN, CANDIDATES_PER_K * int(top_k))
#: a faiss inverted file is rebuilt (its clusters trained again) once the gallery has this many
#: times the faces it was trained on
REBUILD_GROWTH = 4.0


class BackendUnavailable(InputError):
    """The chosen search backend cannot be used (message: one sentence for the user)."""


class FaceStore(Protocol):
    """What a backend reads from the gallery's database (implemented by ``GalleryIndex``)."""

    db_path: Path

    def store_id(self) -> str: ...
    def last_change(self) -> int: ...
    def changes_after(self, seq: int, limit: int) -> list[tuple[int, int]]: ...
    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def iter_vectors(self, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def sample_vectors(self, m: int, seed: int) -> np.ndarray: ...
    def face_count(self) -> int: ...


class SearchBackend:
    """Interface. ``sync(store)`` catches up with the database; ``search(q, k)`` returns
    ``(scores [S, k], ids [S, k])`` for unit probes ``q [S, D]`` (id -1: no face)."""

    name = ""

    def sync(self, store: FaceStore, progress: Optional[Callable[[str, float], None]] = None,
             cancel=None) -> bool:
        """Apply the database's changes; True when anything changed."""
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def info(self) -> dict:
        return {"backend": self.name}

    def close(self) -> None:
        pass


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (exact top-k ids) that ``found`` holds."""
    if truth.size == 0:
        return 1.0
    hits = [len(set(t[t >= 0].tolist()) & set(f[f >= 0].tolist())) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth)]
    return float(np.mean(hits))


def _changed_ids(store: FaceStore, after: int) -> tuple[np.ndarray, int]:
    """Every face id the log touched after ``after`` (added, changed or removed), and the last seq."""
    ids: set[int] = set()
    last = after
    while True:
        rows = store.changes_after(last, 200_000)
        if not rows:
            return np.fromiter(sorted(ids), dtype=np.int64, count=len(ids)), last
        ids.update(r[1] for r in rows)
        last = rows[-1][0]


def _exact_topk(queries: np.ndarray, store: FaceStore, k: int, batch: int = 200_000,
                on_batch: Optional[Callable[[np.ndarray, np.ndarray], None]] = None) -> np.ndarray:
    """Exact top-k ids of ``queries`` over every stored face (one streaming pass);
    ``on_batch(ids, vecs)`` sees each batch too (e.g. to add it to an index on the way)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for ids, vecs in store.iter_vectors(batch):
        if on_batch is not None:
            on_batch(ids, vecs)
        if not len(queries):
            continue
        s = queries @ vecs.T
        cat_s = np.concatenate([best_s, s], axis=1)
        cat_i = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], axis=1)
        top = np.argpartition(-cat_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, top, 1)
        best_i = np.take_along_axis(cat_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


# ==========================================================================================
# faiss
# ==========================================================================================
def faiss_spec_for(n: int) -> tuple[str, int]:
    """(faiss index factory string, nlist) for a gallery of ``n`` faces.

    Exact ``Flat`` below :data:`IVF_FROM`; above, an inverted file with about 4 sqrt(n) lists
    (a power of two, 256 .. 65536) holding 8-bit scalar-quantised vectors (128 bytes a face at
    128-D, a quarter of float32); from 4096 lists a face finds its list through a small HNSW
    graph of the list centres instead of comparing it with all of them.
    """
    if n < IVF_FROM:
        return "IDMap2,Flat", 0
    nlist = int(2 ** round(np.log2(4.0 * np.sqrt(n))))
    nlist = int(min(65536, max(256, nlist)))
    coarse = "_HNSW32" if nlist >= 4096 else ""
    return f"IVF{nlist}{coarse},SQ8", nlist


#: k-means iterations and training faces per list for an inverted file (faiss: 25 and 256;
#: fewer keep a 10 M-face build within minutes on a laptop, at a small cost in list quality)
KMEANS_ITER = 12
TRAIN_PER_LIST = 40


def _import_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise BackendUnavailable("The faiss search backend needs the 'faiss-cpu' package, which is not "
                                 "installed (pip install faiss-cpu).") from None
    return faiss


class FaissBackend(SearchBackend):
    """A faiss index persisted as ``<stem>.faiss`` with its state in ``<stem>.faiss.json``.

    ``spec``: a faiss index factory string, or "auto" (:func:`faiss_spec_for`); ``nprobe``:
    lists searched per probe for an inverted file, or "auto" (tuned at build time to
    :data:`RECALL_TARGET`); ``threads``: faiss OpenMP threads (0: faiss's default).
    """

    name = "faiss"

    def __init__(self, stem: Path, dim: int, spec: str = "auto", nprobe="auto", threads: int = 0,
                 mmap: bool = True) -> None:
        self.faiss = _import_faiss()
        if threads:
            self.faiss.omp_set_num_threads(int(threads))
        self.index_path = Path(str(stem) + ".faiss")
        self.state_path = Path(str(stem) + ".faiss.json")
        self.dim = int(dim)
        self.spec_request = spec
        self.nprobe_request = nprobe
        self.mmap = bool(mmap)
        self.index = None
        self.state: dict = {}
        self._mapped = False
        self.load_seconds: Optional[float] = None

    # ------------------------------------------------------------------ persistence
    def _read(self) -> None:
        if self.index is not None or not (self.index_path.exists() and self.state_path.exists()):
            return
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # unreadable state: rebuilt from the database
        t = time.perf_counter()
        faiss = self.faiss
        try:
            if self.mmap:
                try:
                    self.index = faiss.read_index(str(self.index_path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
                    self._mapped = True
                except RuntimeError:
                    self.index = faiss.read_index(str(self.index_path))
            else:
                self.index = faiss.read_index(str(self.index_path))
        except RuntimeError:
            self.index = None
            return
        self.state = state
        self._apply_nprobe()
        self.load_seconds = time.perf_counter() - t

    def _writable(self) -> None:
        """A memory-mapped index is read-only: read it whole before changing it."""
        if self._mapped:
            self.index = self.faiss.read_index(str(self.index_path))
            self._mapped = False
            self._apply_nprobe()

    def _save(self) -> None:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.index_path.name}.", suffix=".part", dir=self.index_path.parent)
        os.close(fd)
        try:
            self.faiss.write_index(self.index, tmp)
            os.replace(tmp, self.index_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        write_json_atomic(self.state_path, self.state)

    def _coarse_ef(self, ivf) -> None:
        """An HNSW coarse quantizer must look at least as wide as the lists it is asked for."""
        q = self.faiss.downcast_index(ivf.quantizer)
        if hasattr(q, "hnsw"):
            q.hnsw.efSearch = int(max(64, 2 * ivf.nprobe))

    def _ivf(self):
        try:
            return self.faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def _apply_nprobe(self) -> None:
        ivf = self._ivf() if self.index is not None else None
        if ivf is not None:  # a requested nprobe overrides the tuned one (recorded in the state)
            ivf.nprobe = int(self.nprobe_request if self.nprobe_request != "auto" else self.state.get("nprobe") or 1)
            self._coarse_ef(ivf)
            try:  # one probe at a time: spread its lists over the threads, not its (single) query
                ivf.parallel_mode = 1
            except AttributeError:  # pragma: no cover - older faiss
                pass

    # ------------------------------------------------------------------ building
    def _stale(self, store: FaceStore) -> bool:
        if self.index is None or self.state.get("store_id") != store.store_id():
            return True
        if self.state.get("dim") != self.dim:
            return True
        want = self.spec_request
        if want != "auto":
            return self.state.get("spec") != want
        return False

    def rebuild(self, store: FaceStore, progress=None, cancel=None) -> None:
        """Build the index from every stored face (and tune ``nprobe``); replaces the files at the end."""
        faiss = self.faiss
        t0 = time.perf_counter()
        n = store.face_count()
        seq = store.last_change()
        spec, nlist = (faiss_spec_for(n) if self.spec_request == "auto" else (self.spec_request, 0))
        index = faiss.index_factory(self.dim, spec, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        ivf = None
        if not index.is_trained:
            if progress:
                progress("training the index", 0.0)
            ivf = faiss.extract_index_ivf(index)
            nlist = int(ivf.nlist)
            ivf.cp.niter = KMEANS_ITER
            m = int(min(n, max(TRAIN_PER_LIST * nlist, 50_000)))
            vecs = store.sample_vectors(int(m * 1.15), seed=0)[:m]  # runs of rows may overlap: ask for more
            if len(vecs) < nlist:
                raise BackendUnavailable(f"The faiss index {spec} needs at least {nlist} faces to train; "
                                         f"the gallery has {len(vecs)}.")
            index.train(vecs)
        # probes for tuning: stored faces with some noise (a new photo of a known face)
        calib = store.sample_vectors(min(n, 100), seed=1)
        if len(calib):
            calib = calib + rng.normal(0, 0.25 / np.sqrt(self.dim), calib.shape).astype(np.float32)
            calib /= np.linalg.norm(calib, axis=1, keepdims=True)
        added = [0]

        def add(ids, vecs):
            if is_cancelled(cancel):
                raise Cancelled("Building the faiss index was cancelled; the old index is kept.")
            index.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids)
            added[0] += len(ids)
            if progress:
                progress("adding faces", added[0] / max(1, n))

        truth = _exact_topk(calib, store, min(10, max(1, n)), on_batch=add)
        nprobe = 0
        recall = 1.0
        if ivf is not None:
            nprobe, recall = self._tune(index, ivf, calib, truth)
        self.index, self._mapped = index, False
        self.state = {"store_id": store.store_id(), "seq": seq, "dim": self.dim, "spec": spec, "nlist": nlist,
                      "nprobe": nprobe, "trained_on": n, "count": int(index.ntotal),
                      "tuned_recall_at_10": round(recall, 4), "recall_target": RECALL_TARGET,
                      "build_seconds": round(time.perf_counter() - t0, 3), "faiss": faiss.__version__}
        self._apply_nprobe()
        self._save()

    def _tune(self, index, ivf, calib, truth) -> tuple[int, float]:
        """nprobe and its recall: the share of each probe's exact top-10 among the
        :func:`candidates_for` (10) faces the index proposes, which the gallery re-scores exactly."""
        def recall(nprobe: int) -> float:
            ivf.nprobe = int(nprobe)
            self._coarse_ef(ivf)
            return recall_at(index.search(calib, candidates_for(truth.shape[1]))[1], truth)

        if self.nprobe_request != "auto":
            return int(self.nprobe_request), recall(int(self.nprobe_request))
        steps = sorted({int(round(2 ** (e / 2))) for e in range(0, 2 * int(np.log2(ivf.nlist)) + 1)} | {int(ivf.nlist)})
        for nprobe in steps:
            r = recall(nprobe)
            if r >= RECALL_TARGET or nprobe >= ivf.nlist:
                return nprobe, r
        return int(ivf.nlist), r

    # ------------------------------------------------------------------ the interface
    def sync(self, store: FaceStore, progress=None, cancel=None) -> bool:
        self._read()
        if self._stale(store):
            self.rebuild(store, progress, cancel)
            return True
        if self.state.get("seq") == store.last_change():
            return False
        touched, last = _changed_ids(store, int(self.state.get("seq", 0)))
        n = store.face_count()
        grown = self.state.get("nlist") and n > REBUILD_GROWTH * max(1, int(self.state.get("trained_on", 1)))
        small_to_big = self.spec_request == "auto" and not self.state.get("nlist") and n >= IVF_FROM
        if grown or small_to_big:
            self.rebuild(store, progress, cancel)
            return True
        self._writable()
        if len(touched):
            self.index.remove_ids(touched)
            ids, vecs = store.vectors_of(touched)
            if len(ids):
                self.index.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids)
        self.state.update(seq=last, count=int(self.index.ntotal))
        self._save()
        return True

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None or self.index.ntotal == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        k = int(min(k, self.index.ntotal))
        return self.index.search(np.ascontiguousarray(q, np.float32), k)

    def count(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0

    def info(self) -> dict:
        d = {"backend": self.name, "index": str(self.index_path), "memory_mapped": self._mapped}
        d.update({k: self.state.get(k) for k in ("spec", "nlist", "nprobe", "count", "tuned_recall_at_10",
                                                  "recall_target", "trained_on", "build_seconds")})
        ivf = self._ivf() if self.index is not None else None
        if ivf is not None and int(ivf.nprobe) != d.get("nprobe"):
            d["nprobe_tuned"], d["nprobe"] = d.get("nprobe"), int(ivf.nprobe)
        return d


# ==========================================================================================
# Milvus
# ==========================================================================================
def _import_pymilvus():
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        raise BackendUnavailable("The milvus search backend needs the 'pymilvus' package (and, for a local "
                                 "file, 'milvus-lite'), which is not installed (pip install pymilvus).") from None
    return pymilvus


def _is_local(uri: str) -> bool:
    return "://" not in uri


class MilvusBackend(SearchBackend):
    """One collection per gallery and embedder on the Milvus at ``uri``.

    ``uri``: ``http://host:19530`` (a server or cluster; ``token`` for its credentials, from the
    ``MILVUS_TOKEN`` environment variable by default) or a local ``*.db`` path (milvus-lite,
    started by pymilvus). Rows are upserted by the face's id in the gallery database, so a
    replayed change can never duplicate a face. The last change applied is kept in
    ``<stem>.milvus.json``, per URI and collection.
    """

    name = "milvus"

    def __init__(self, stem: Path, dim: int, uri: str, collection: Optional[str] = None,
                 token: Optional[str] = None, index_type: Optional[str] = None) -> None:
        pm = _import_pymilvus()
        if not uri:
            raise BackendUnavailable("The milvus search backend needs a URI: http://host:19530 for a server, "
                                     "or a local .db file for milvus-lite.")
        self.uri = uri if not _is_local(uri) else str(Path(uri).expanduser().resolve())
        self.dim = int(dim)
        self.collection = collection or ("sdesr_" + Path(stem).name[:24])
        self.state_path = Path(str(stem) + ".milvus.json")
        self.index_type = index_type or ("FLAT" if _is_local(uri) else "AUTOINDEX")
        try:
            if _is_local(uri):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            self.client = pm.MilvusClient(uri=self.uri, token=token if token is not None
                                          else os.environ.get("MILVUS_TOKEN", ""))
        except Exception as e:  # noqa: BLE001 - connection refused, lite cannot start, bad URI ...
            raise BackendUnavailable(f"The Milvus server at {uri} could not be reached "
                                     f"({e.__class__.__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}).") \
                from None
        self._pm = pm
        self._count: Optional[int] = None

    def _states(self) -> dict:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _key(self) -> str:
        return hashlib.sha256(f"{self.uri}\0{self.collection}".encode()).hexdigest()[:16]

    def _ensure_collection(self) -> bool:
        """Create the collection if it is missing; True when it was created."""
        c = self.client
        if c.has_collection(self.collection):
            return False
        DataType = self._pm.DataType
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False,
                                 description="sdesr_gui gallery embeddings (id = row of the local index)")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
        params = c.prepare_index_params()
        params.add_index(field_name="vec", index_type=self.index_type, metric_type="IP")
        c.create_collection(self.collection, schema=schema, index_params=params)
        return True

    def sync(self, store: FaceStore, progress=None, cancel=None) -> bool:
        states = self._states()
        mine = states.get(self._key(), {})
        created = self._ensure_collection()
        last = store.last_change()
        if not created and mine.get("store_id") == store.store_id() and mine.get("seq") == last:
            return False
        c = self.client
        if created or mine.get("store_id") != store.store_id():
            # a new collection, or one this database never filled: fill it from every stored face
            c.drop_collection(self.collection)
            self._ensure_collection()
            n, done = store.face_count(), 0
            for ids, vecs in store.iter_vectors(10_000):
                if is_cancelled(cancel):
                    raise Cancelled("Filling the Milvus collection was cancelled; it is filled again next time.")
                c.insert(self.collection, [{"id": int(i), "vec": v.tolist()} for i, v in zip(ids, vecs)])
                done += len(ids)
                if progress:
                    progress("uploading faces", done / max(1, n))
        else:
            touched, last = _changed_ids(store, int(mine.get("seq", 0)))
            ids, vecs = store.vectors_of(touched)
            gone = sorted(set(touched.tolist()) - set(ids.tolist()))
            for k in range(0, len(gone), 10_000):
                c.delete(self.collection, ids=[int(i) for i in gone[k:k + 10_000]])
            for k in range(0, len(ids), 10_000):
                c.upsert(self.collection, [{"id": int(i), "vec": v.tolist()}
                                           for i, v in zip(ids[k:k + 10_000], vecs[k:k + 10_000])])
        try:
            c.flush(self.collection)
        except Exception:  # noqa: BLE001 - not every deployment needs (or allows) an explicit flush
            pass
        states[self._key()] = {"uri": self.uri, "collection": self.collection, "store_id": store.store_id(),
                               "seq": last}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_path, states)
        self._count = None
        return True

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(max(1, min(k, 16384)))
        res = self.client.search(self.collection, data=[row.tolist() for row in np.asarray(q, np.float32)],
                                 limit=k, search_params={"metric_type": "IP"})
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for r, hits in enumerate(res):
            for j, h in enumerate(hits[:k]):
                ids[r, j] = int(h["id"])
                scores[r, j] = float(h["distance"])
        return scores, ids

    def count(self) -> int:
        if self._count is None:
            stats = self.client.get_collection_stats(self.collection)
            self._count = int(stats.get("row_count", 0))
        return self._count

    def info(self) -> dict:
        return {"backend": self.name, "uri": self.uri, "collection": self.collection, "index_type": self.index_type}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass


def make_backend(name: str, stem: Path, dim: int, options: Optional[dict] = None) -> Optional[SearchBackend]:
    """The backend called ``name`` for the index stored at ``stem`` (None for "exact").

    ``options``: ``faiss_spec``, ``nprobe``, ``threads`` for faiss; ``milvus_uri``,
    ``milvus_collection``, ``milvus_token``, ``milvus_index`` for milvus.
    """
    o = dict(options or {})
    if name == "exact":
        return None
    if name == "faiss":
        return FaissBackend(stem, dim, spec=o.get("faiss_spec") or "auto", nprobe=o.get("nprobe") or "auto",
                            threads=int(o.get("threads") or 0))
    if name == "milvus":
        return MilvusBackend(stem, dim, uri=o.get("milvus_uri") or os.environ.get("SDESR_MILVUS_URI", ""),
                             collection=o.get("milvus_collection"), token=o.get("milvus_token"),
                             index_type=o.get("milvus_index"))
    raise BackendUnavailable(f"Unknown search backend {name!r}; choose one of {', '.join(BACKENDS)}.")
