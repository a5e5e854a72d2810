"""``sdesr bench-gallery``: build, load and query synthetic galleries with each search backend.

A synthetic gallery has ``n`` faces, ``per_identity`` per identity. ``distribution``:

* ``face-like`` (default): identity centres drawn from a Gaussian with the mean length and the
  covariance spectrum of real dlib embeddings (``data/dlib_embedding_spectrum.json``: 1,881
  CelebA faces), in a random orientation; each face is its centre plus a smaller draw of the
  same shape, L2-normalised. Real face embeddings fill a narrow cone of few effective
  dimensions (about 29 of dlib's 128), which is what approximate search exploits.
* ``isotropic``: uniform on the sphere (the worst case for any approximate index).

Probes are new views of random gallery identities (a known face photographed again); the
consensus query has ``samples`` views of one identity. Recall@10 compares each backend's
top-10 faces with exact search over the same database (one streaming pass).

The database is written once into ``workdir`` and reused by later runs with the same
parameters (a 10 M-face SQLite file is about 7.6 GB); without ``workdir`` a temporary folder is
used and removed. Loading and querying run in a fresh process, so its memory is what a
user's process would hold.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .gallery import Embedder, GalleryIndex

__all__ = ["benchmark_query", "DISTRIBUTIONS", "synthetic_views"]

DISTRIBUTIONS = ("face-like", "isotropic")
#: within-identity spread relative to the between-identity covariance (face-like): gives a
#: genuine-pair cosine of about 0.93 and an impostor cosine of about 0.83 +- 0.05, as dlib on CelebA
WITHIN_SCALE = 0.5
_CHUNK = 100_000


class _SyntheticEmbedder(Embedder):
    name = "synthetic"

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    def embed_aligned(self, frames):  # pragma: no cover - never called
        raise NotImplementedError


class _Generator:
    """Deterministic synthetic identities: centre ``i`` and views of it, from ``seed`` alone."""

    def __init__(self, dim: int, distribution: str, seed: int) -> None:
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        self.dim, self.distribution, self.seed = int(dim), distribution, int(seed)
        rng = np.random.default_rng([seed, 0])
        if distribution == "face-like":
            doc = json.loads((Path(__file__).resolve().parents[1] / "data" /
                              "dlib_embedding_spectrum.json").read_text(encoding="utf-8"))
            ev = np.asarray(doc["eigenvalues"], np.float64)
            ev = np.resize(ev, dim) if len(ev) != dim else ev
            basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
            self.mean = (doc["mean_norm"] * basis[:, 0]).astype(np.float32)
            self.mix = (basis * np.sqrt(ev)).T.astype(np.float32)  # z @ mix: covariance basis diag(ev) basis^T
        else:
            self.mean = np.zeros(dim, np.float32)
            self.mix = (np.eye(dim) / np.sqrt(dim)).astype(np.float32)
        self.within = np.float32(np.sqrt(WITHIN_SCALE) if distribution == "face-like" else 0.6)

    def centres(self, first: int, count: int) -> np.ndarray:
        """Identity centres ``first .. first + count - 1`` (not normalised)."""
        out = []
        i = first
        while i < first + count:
            c, off = divmod(i, _CHUNK)
            take = min(_CHUNK - off, first + count - i)
            rng = np.random.default_rng([self.seed, 1, c])
            block = rng.standard_normal((_CHUNK, self.dim), dtype=np.float32)[off:off + take]
            out.append(self.mean + block @ self.mix)
            i += take
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def views(self, centres: np.ndarray, rng) -> np.ndarray:
        v = centres + self.within * (rng.standard_normal(centres.shape, dtype=np.float32) @ self.mix)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def synthetic_views(n_identities: int, views: int, dim: int = 128, distribution: str = "face-like",
                    seed: int = 0) -> np.ndarray:
    """``[n_identities, views, dim]`` unit embeddings (for tests and plots of the distribution)."""
    g = _Generator(dim, distribution, seed)
    c = g.centres(0, n_identities)
    rng = np.random.default_rng([seed, 3])
    return np.stack([g.views(c, rng) for _ in range(views)], axis=1)


def _build_database(workdir: Path, n: int, dim: int, per_identity: int, distribution: str, seed: int,
                    progress: Optional[Callable[[str, float], None]]) -> tuple[GalleryIndex, float, bool]:
    """The synthetic gallery's database in ``workdir`` (written unless already complete)."""
    gal = workdir / "gallery"
    gal.mkdir(parents=True, exist_ok=True)
    params = {"faces": n, "dim": dim, "per_identity": per_identity, "distribution": distribution, "seed": seed}
    marker = workdir / "synthetic.json"
    idx = GalleryIndex(gal, _SyntheticEmbedder(dim), cache_dir=workdir / "cache")
    try:
        done = json.loads(marker.read_text(encoding="utf-8")) == params and idx.db_path.exists()
    except (OSError, ValueError):
        done = False
    if done:
        return idx, 0.0, True
    for p in (workdir / "cache").glob("*"):
        p.unlink()
    marker.unlink(missing_ok=True)
    gen = _Generator(dim, distribution, seed)
    t = time.perf_counter()
    n_ids = -(-n // per_identity)
    for start in range(0, n_ids, _CHUNK // per_identity):
        count = min(_CHUNK // per_identity, n_ids - start)
        centres = gen.centres(start, count)
        rng = np.random.default_rng([seed, 2, start])
        vecs = np.stack([gen.views(centres, rng) for _ in range(per_identity)], axis=1).reshape(-1, dim)
        first = start * per_identity
        idx._write_synthetic((f"id{(start + j // per_identity):08d}/{first + j:09d}.jpg",
                              f"id{(start + j // per_identity):08d}", vecs[j])
                             for j in range(min(count * per_identity, n - first)))
        if progress:
            progress("writing the synthetic gallery", min(1.0, (start + count) * per_identity / n))
    marker.write_text(json.dumps(params), encoding="utf-8")
    return idx, time.perf_counter() - t, False


def _stats(v) -> dict:
    a = np.asarray(v, np.float64)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max())}


def _status_mib(key: str) -> float:
    """A memory line of /proc/self/status in MiB (NaN where there is none, e.g. not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _peak_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike getrusage's maximum, it is not
    inherited from the parent that forked it)."""
    return _status_mib("VmHWM")


def _load_and_query(job: dict) -> dict:
    """In a fresh process: open the gallery with the backend, time the load and the queries."""
    import faulthandler

    faulthandler.enable()
    if job.get("threads"):
        try:
            import faiss

            faiss.omp_set_num_threads(int(job["threads"]))
        except ImportError:
            pass
    base = _rss_mib()
    built = None
    if job.get("build_here"):  # milvus-lite: one process holds the file, so build where it is queried
        t = time.perf_counter()
        GalleryIndex(job["gallery"], _SyntheticEmbedder(job["dim"]), cache_dir=job["cache"],
                     backend=job["backend"], backend_options=job["options"]).search_backend()
        built = time.perf_counter() - t
    idx = GalleryIndex(job["gallery"], _SyntheticEmbedder(job["dim"]), cache_dir=job["cache"],
                       backend=job["backend"], backend_options=job["options"])
    t = time.perf_counter()
    be = idx.search_backend()
    if be is None:
        idx._load()
    load_s = time.perf_counter() - t
    rss_loaded = _rss_mib()
    probes = np.asarray(job["probes"], np.float32)
    multi = np.asarray(job["multi"], np.float32)
    k = int(job["top_k"])

    def timeit(fn, count):
        fn(0)  # warm-up
        out = []
        for i in range(count):
            t0 = time.perf_counter()
            fn(i)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    found, first_id = [], []
    q_file = timeit(lambda i: found.append(idx.query(probes[i], k)), len(probes))
    found = found[1:]
    q_id = timeit(lambda i: first_id.append(idx.query(probes[i], k, per_identity=True)[0].identity), len(probes))
    first_id = first_id[1:]
    q_multi = timeit(lambda i: idx.query_samples(multi[i], k), len(multi))
    return {"built_here_seconds": built, "load_seconds": load_s, "rss_before_mib": base, "rss_loaded_mib": rss_loaded,
            "rss_after_queries_mib": _rss_mib(),
            "rss_peak_mib": _peak_mib(), "found": [[c.file for c in lst] for lst in found], "first_identity": first_id,
            "query": _stats(q_file), "query_per_identity": _stats(q_id), "query_samples": _stats(q_multi),
            "backend_info": idx.backend_info() if be is not None else {"backend": "exact"}}


def benchmark_query(n: int = 10_000, dim: int = 128, queries: int = 200, samples: int = 8, top_k: int = 10,
                    per_identity: int = 4, seed: int = 0, backend: str = "exact",
                    backend_options: Optional[dict] = None, workdir: Optional[Path] = None,
                    distribution: str = "face-like", rebuild: bool = True, threads: int = 0,
                    progress: Optional[Callable[[str, float], None]] = None) -> dict:
    """Build, load and query a synthetic gallery of ``n`` faces with one search backend.

    Returns the times (write, build, load; query median / p95 for one probe at file and
    identity level and a ``samples``-sample consensus), memory (resident MiB of the querying
    process after the load, and its peak) and recall@``top_k`` of one-probe queries against
    exact search. ``rebuild``: build the backend's index anew (else reuse one in ``workdir``).
    """
    from . import search

    if backend not in search.BACKENDS or backend == "auto":
        raise ValueError(f"backend must be one of exact, faiss, milvus (got {backend!r})")
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="sdesr-bench-")
        workdir = Path(tmp)
    workdir = Path(workdir)
    try:
        idx, write_s, reused = _build_database(workdir, n, dim, per_identity, distribution, seed, progress)
        gen = _Generator(dim, distribution, seed)
        rng = np.random.default_rng([seed, 4])
        n_ids = -(-n // per_identity)
        pick = np.sort(rng.integers(0, n_ids, queries))
        probes = np.concatenate([gen.views(gen.centres(int(i), 1), rng) for i in pick])
        multi = np.stack([gen.views(np.repeat(gen.centres(int(i), 1), samples, 0), rng) for i in pick])
        # exact top-k of each probe (one pass over the database): the reference for recall
        t = time.perf_counter()
        truth_ids = search._exact_topk(probes, idx, top_k)
        truth_s = time.perf_counter() - t
        rows = idx._face_rows("rowid", [int(i) for i in np.unique(truth_ids[truth_ids >= 0])], "rowid, path")
        path_of = dict(rows)
        truth = [[path_of[int(i)] for i in r if i >= 0] for r in truth_ids]
        build_s = None
        stem = idx.db_path.with_suffix("")
        local_milvus = backend == "milvus" and search._is_local(str((backend_options or {}).get("milvus_uri", "")))
        if backend != "exact":
            if rebuild:
                for p in stem.parent.glob(stem.name + ".*"):
                    if p.suffix in (".faiss", ".json") and p.name != idx.db_path.name:
                        p.unlink()
                if local_milvus:  # a fresh milvus-lite file
                    shutil.rmtree(Path(backend_options["milvus_uri"]), ignore_errors=True)
                    Path(backend_options["milvus_uri"]).unlink(missing_ok=True)
                if backend == "milvus" and not local_milvus:
                    mb = search.make_backend("milvus", stem, dim, backend_options)
                    if mb.client.has_collection(mb.collection):
                        mb.client.drop_collection(mb.collection)
                    mb.close()
            if not local_milvus:
                b_idx = GalleryIndex(idx.folder, _SyntheticEmbedder(dim), cache_dir=idx.cache_dir, backend=backend,
                                     backend_options=backend_options)
                t = time.perf_counter()
                b = b_idx.search_backend(progress=progress)
                build_s = time.perf_counter() - t
                b.close()
        job = {"gallery": str(idx.folder), "cache": str(idx.cache_dir), "dim": dim, "backend": backend,
               "options": dict(backend_options or {}), "probes": probes, "multi": multi, "top_k": top_k,
               "threads": threads, "build_here": local_milvus}
        with mp.get_context("spawn").Pool(1) as pool:
            r = pool.apply(_load_and_query, (job,))
        built = r.pop("built_here_seconds")
        if built is not None:
            build_s = built
        found = r.pop("found")
        first_id = r.pop("first_identity")
        # the identity an analyst sees first: the same as exact search's (its best face is the top face)?
        same_first = float(np.mean([f == (tr[0].split("/")[0] if tr else None) for f, tr in zip(first_id, truth)]))
        index_file = Path(str(stem) + ".faiss")
        if backend == "faiss" and index_file.exists():
            r["index_bytes"] = index_file.stat().st_size
        recall = float(np.mean([len(set(f) & set(tr)) / max(1, len(tr)) for f, tr in zip(found, truth)]))
        pair = synthetic_views(500, 2, dim, distribution, seed + 1)
        genuine = float(np.mean(np.sum(pair[:, 0] * pair[:, 1], axis=1)))
        c = pair[:, 0] @ pair[:, 0].T
        impostor = c[np.triu_indices(len(c), 1)]
        return {"faces": n, "identities": n_ids, "dim": dim, "distribution": distribution,
                "genuine_cosine": round(genuine, 4),
                "impostor_cosine": [round(float(impostor.mean()), 4), round(float(impostor.std()), 4)],
                "backend": backend, "queries": queries, "top_k": top_k, "samples": samples,
                "write_seconds": write_s, "database_reused": reused,
                "database_bytes": idx.db_path.stat().st_size, "exact_pass_seconds": truth_s,
                "build_seconds": build_s, f"recall_at_{top_k}": recall, "rank1_identity_as_exact": same_first, **r}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
