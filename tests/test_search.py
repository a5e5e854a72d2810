"""Search backends (exact, faiss, milvus) and parallel indexing of a gallery.

Each backend must give the same top candidates as exact search on a small real gallery (CelebA
faces from the shared data when present, else scikit-image's astronaut and LFW faces), see every
incremental add / change / remove, and a killed parallel indexing run must resume with nothing
lost or stored twice. The Milvus tests run the embedded milvus-lite and skip when it cannot start.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdesr_gui.core import search
from sdesr_gui.core.gallery import GalleryIndex
from sdesr_gui.core.gallery_bench import benchmark_query, synthetic_views

from test_gallery import ColourEmbedder, _img, dlib_embedder  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba"

pytest.importorskip("faiss")


def _milvus_options(tmp_path: Path) -> dict:
    """A milvus-lite file in ``tmp_path``, or skip when milvus-lite cannot start here."""
    opts = {"milvus_uri": str(tmp_path / "milvus.db")}
    try:
        b = search.make_backend("milvus", tmp_path / "probe", 4, opts)
        b.close()
    except search.BackendUnavailable as e:
        pytest.skip(f"milvus-lite cannot start here: {e}")
    return opts


def _backends(tmp_path: Path, milvus: bool = True) -> list[tuple[str, dict]]:
    out = [("faiss", {}), ("faiss", {"faiss_spec": "IVF4,Flat", "nprobe": 4})]
    if milvus:
        out.append(("milvus", _milvus_options(tmp_path)))
    return out


# ------------------------------------------------------------------------------------------ a real gallery

def _real_gallery(root: Path) -> tuple[Path, list[tuple[np.ndarray, str]]]:
    """A gallery folder of real faces and probe frames (another photo of a gallery identity)."""
    g = root / "gallery"
    probes: list[tuple[np.ndarray, str]] = []
    if (CELEBA / "identities.csv").is_file():
        by = defaultdict(list)
        for r in csv.DictReader(open(CELEBA / "identities.csv")):
            if r["source"] == "aligned":
                by[r["identity"]].append(r["file"])
        chosen = sorted((i for i, v in by.items() if len(v) >= 3), key=int)[:14]
        for ident in chosen:
            files = sorted(by[ident])
            for f in files[:2]:
                (g / ident).mkdir(parents=True, exist_ok=True)
                Image.open(CELEBA / "aligned" / f).convert("RGB").save(g / ident / (Path(f).stem + ".png"))
            probes.append((np.asarray(Image.open(CELEBA / "aligned" / files[2]).convert("RGB")), ident))
        return g, probes
    from skimage import data, transform  # no shared data: the faces scikit-image ships

    g.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(data.lfw_subset()[:16]):  # tight 25x25 crops: enlarged, with a margin to detect
        big = np.pad((transform.resize(f, (128, 128)) * 255).astype(np.uint8), 48, constant_values=128)
        rgb = np.stack([big] * 3, -1)
        Image.fromarray(rgb).save(g / f"lfw{k:02d}.png")
        if k < 8:
            probes.append((np.clip(rgb.astype(int) + 6, 0, 255).astype(np.uint8), f"lfw{k:02d}"))
    Image.fromarray(data.astronaut()).save(g / "astronaut.png")
    return g, probes


def test_every_backend_ranks_a_real_gallery_as_exact_search(dlib_embedder, tmp_path: Path) -> None:
    dlib = dlib_embedder
    g, probes = _real_gallery(tmp_path)
    exact = GalleryIndex(g, dlib, cache_dir=tmp_path / "cache", backend="exact")
    rep = exact.update(workers=2)  # the real embedder in two worker processes
    assert rep.added >= 8, rep.skipped
    vecs = [dlib.embed_image(p)[0] for p, _ in probes]
    vecs = np.stack([v for v in vecs if v is not None])
    assert len(vecs) >= 5
    for name, opts in _backends(tmp_path):
        idx = GalleryIndex(g, dlib, cache_dir=tmp_path / "cache", backend=name, backend_options=opts)
        assert len(idx) == len(exact)
        for v in vecs:
            want = [(c.file, round(c.score, 5)) for c in exact.query(v, 5)]
            assert [(c.file, round(c.score, 5)) for c in idx.query(v, 5)] == want, name
            want = [(c.identity, round(c.score, 5)) for c in exact.query(v, 3, per_identity=True)]
            assert [(c.identity, round(c.score, 5)) for c in idx.query(v, 3, per_identity=True)] == want, name
        a, b = exact.query_samples(vecs[:3], 3), idx.query_samples(vecs[:3], 3)
        assert [c.identity for c in a.candidates] == [c.identity for c in b.candidates]
        assert [round(c.mean_score, 5) for c in a.candidates] == [round(c.mean_score, 5) for c in b.candidates]
        idx.search_backend().close()


def test_parallel_indexing_stores_what_one_process_stores(dlib_embedder, tmp_path: Path) -> None:
    dlib = dlib_embedder
    g, _ = _real_gallery(tmp_path)
    one = GalleryIndex(g, dlib, cache_dir=tmp_path / "c1")
    two = GalleryIndex(g, dlib, cache_dir=tmp_path / "c2")
    r1, r2 = one.update(), two.update(workers=2)
    assert (r1.added, sorted(r1.skipped)) == (r2.added, sorted(r2.skipped))
    f1, i1, s1, e1 = one.entries()
    f2, i2, s2, e2 = two.entries()
    assert (f1, i1, s1) == (f2, i2, s2)
    np.testing.assert_allclose(e1, e2, atol=1e-6)


# ------------------------------------------------------------------------------------------ incremental
def test_add_change_remove_reach_every_backend(tmp_path: Path) -> None:
    g = tmp_path / "gallery"
    colours = {f"p{k}/a.png": (20 + 37 * k % 230, 200 - 23 * k % 180, 60 + 51 * k % 190) for k in range(12)}
    for rel, c in colours.items():
        _img(g / rel, c)
    emb = ColourEmbedder()
    exact = GalleryIndex(g, emb, cache_dir=tmp_path / "c")
    exact.update()
    backends = [GalleryIndex(g, emb, cache_dir=tmp_path / "c", backend=n, backend_options=o)
                for n, o in _backends(tmp_path)]
    probe = emb._vec(np.asarray(Image.open(g / "p3/a.png").convert("RGB")))

    def agree(v, expect_first=None):
        want = [(c.file, round(c.score, 5)) for c in exact.query(v, 4)]
        if expect_first is not None:
            assert want[0][0] == expect_first
        for b in backends:
            assert [(c.file, round(c.score, 5)) for c in b.query(v, 4)] == want, b.backend_name
            assert len(b) == len(exact)

    agree(probe, "p3/a.png")
    # remove p3, change p5 to p3's colour, add p20 with p3's colour slightly off
    (g / "p3/a.png").unlink()
    _img(g / "p5/a.png", colours["p3/a.png"], size=(40, 33))
    _img(g / "p20/a.png", tuple(min(255, v + 3) for v in colours["p3/a.png"]))
    rep = exact.update()
    assert (rep.added, rep.updated, rep.removed) == (1, 1, 1)
    agree(probe)
    found = {c.file for c in backends[0].query(probe, 3)}
    assert "p3/a.png" not in found and {"p5/a.png", "p20/a.png"} <= found
    for b in backends:
        b.search_backend().close()
    # a backend opened later (a new process) catches up from the log as well
    late = GalleryIndex(g, emb, cache_dir=tmp_path / "c", backend="faiss")
    assert [c.file for c in late.query(probe, 3)] == [c.file for c in exact.query(probe, 3)]


def test_a_faiss_index_from_another_database_is_rebuilt(tmp_path: Path) -> None:
    g = tmp_path / "gallery"
    _img(g / "a/1.png", (200, 30, 30))
    _img(g / "b/1.png", (30, 200, 30))
    idx = GalleryIndex(g, ColourEmbedder(), cache_dir=tmp_path / "c", backend="faiss")
    idx.update()
    assert len(idx) == 2
    idx.db_path.unlink()  # the cache was cleared: a new database, the old faiss files stay
    for p in idx.db_path.parent.glob(idx.db_path.name + "-*"):
        p.unlink()
    idx2 = GalleryIndex(g, ColourEmbedder(), cache_dir=tmp_path / "c", backend="faiss")
    idx2.update()
    _img(g / "c/1.png", (30, 30, 200))
    idx2.update()
    assert len(idx2) == 3


def test_schema_1_databases_are_migrated_without_embedding_again(tmp_path: Path) -> None:
    g = tmp_path / "gallery"
    for k in range(4):
        _img(g / f"p{k}.png", (40 + 50 * k, 90, 200 - 40 * k))
    emb = ColourEmbedder()
    idx = GalleryIndex(g, emb, cache_dir=tmp_path / "c")
    idx.update()
    con = sqlite3.connect(idx.db_path)  # make it look like a schema-1 database
    with con:
        for t in ("files_face_added", "files_face_removed", "files_face_changed"):
            con.execute(f"DROP TRIGGER {t}")
        con.execute("DROP TABLE changes")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
        con.execute("DELETE FROM meta WHERE key = 'store_id'")
    con.close()
    emb2 = ColourEmbedder()
    again = GalleryIndex(g, emb2, cache_dir=tmp_path / "c", backend="faiss")
    rep = again.update()
    assert rep.unchanged == 4 and emb2.calls == 0
    assert len(again) == 4 and again.last_change() >= 4


# ------------------------------------------------------------------------------------------ killed runs
class SlowColourEmbedder(ColourEmbedder):
    """Takes a while per face, so a kill lands with jobs in flight (pickled into the workers)."""

    def embed_image(self, rgb):
        import time

        time.sleep(0.05)
        return super().embed_image(rgb)


KILL_SCRIPT = r"""
import os, sys
sys.path.insert(0, sys.argv[3])
from test_search import SlowColourEmbedder as Slow
from sdesr_gui.core.gallery import GalleryIndex

def progress(done, total, name):
    if done == int(sys.argv[4]):
        os._exit(17)  # killed: no cleanup, the workers are orphaned mid-job

GalleryIndex(sys.argv[1], Slow(), cache_dir=sys.argv[2]).update(progress=progress, workers=2)
"""


def test_a_killed_parallel_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    g = tmp_path / "gallery"
    for k in range(16):
        _img(g / f"id{k:02d}" / "a.png", (15 * k + 10, 100, 240 - 12 * k))
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(g), str(cache), str(Path(__file__).parent), "6"],
                       env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 17, r.stderr.decode()[-2000:]
    emb = ColourEmbedder()
    idx = GalleryIndex(g, emb, cache_dir=cache)
    stored_before = idx.face_count()
    assert stored_before >= 6
    rep = idx.update(workers=2)
    assert rep.unchanged == stored_before and rep.added == 16 - stored_before
    con = sqlite3.connect(idx.db_path)
    paths = [p for (p,) in con.execute("SELECT path FROM files")]
    con.close()
    assert sorted(paths) == sorted(f"id{k:02d}/a.png" for k in range(16))  # each once
    assert len(idx) == 16


def test_parallel_indexing_cancels_and_keeps_what_it_stored(tmp_path: Path) -> None:
    g = tmp_path / "gallery"
    for k in range(10):
        _img(g / f"id{k}" / "a.png", (20 * k + 20, 60, 90))
    seen = []

    def cancel():
        return len(seen) >= 3

    idx = GalleryIndex(g, ColourEmbedder(), cache_dir=tmp_path / "c")
    rep = idx.update(progress=lambda d, t, f: seen.append(f), cancel=cancel, workers=2)
    assert rep.cancelled and 3 <= idx.face_count() < 10
    rep = idx.update(workers=2)
    assert not rep.cancelled and idx.face_count() == 10 and rep.unchanged >= 3


# ------------------------------------------------------------------------------------------ faiss at size
def test_faiss_tunes_nprobe_to_the_recall_target(tmp_path: Path) -> None:
    r = benchmark_query(n=8000, queries=30, samples=2, backend="faiss", workdir=tmp_path / "w",
                        backend_options={"faiss_spec": "IVF64,SQ8"})
    info = r["backend_info"]
    assert info["spec"] == "IVF64,SQ8" and 1 <= info["nprobe"] <= 64
    assert info["tuned_recall_at_10"] >= search.RECALL_TARGET
    assert r["recall_at_10"] >= 0.9, r["recall_at_10"]
    # the exact reference through the same code path
    e = benchmark_query(n=8000, queries=30, samples=2, backend="exact", workdir=tmp_path / "w")
    assert e["recall_at_10"] == 1.0 and e["database_reused"]


def test_face_like_synthetic_embeddings_look_like_dlib_ones() -> None:
    v = synthetic_views(300, 2)
    genuine = np.sum(v[:, 0] * v[:, 1], axis=1).mean()
    c = v[:, 0] @ v[:, 0].T
    impostor = c[np.triu_indices(300, 1)]
    assert 0.88 < genuine < 0.97 and 0.7 < impostor.mean() < 0.9  # dlib on CelebA: about 0.93 and 0.84
    iso = synthetic_views(300, 1, distribution="isotropic")[:, 0]
    assert abs((iso @ iso.T)[np.triu_indices(300, 1)].mean()) < 0.02


def test_faiss_spec_grows_with_the_gallery() -> None:
    assert search.faiss_spec_for(1000)[0] == "IDMap2,Flat"
    spec, nlist = search.faiss_spec_for(1_000_000)
    assert spec == "IVF4096_HNSW32,SQ8" and nlist == 4096
    assert search.faiss_spec_for(10_000_000)[1] == 16384


def test_unknown_backend_and_missing_uri_are_one_sentence(tmp_path: Path) -> None:
    from sdesr_gui.core.video import InputError

    g = tmp_path / "g"
    g.mkdir()
    with pytest.raises(InputError, match="Unknown search backend"):
        GalleryIndex(g, ColourEmbedder(), cache_dir=tmp_path / "c", backend="annoy")
    with pytest.raises(search.BackendUnavailable, match="needs a URI"):
        GalleryIndex(g, ColourEmbedder(), cache_dir=tmp_path / "c", backend="milvus").search_backend()
