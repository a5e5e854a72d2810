"""The gallery matcher: incremental index outside the gallery, queries, consensus, embedders.

Index bookkeeping is tested with a fast colour "embedder" that counts its calls; recognition is
tested with the real dlib embedder on real faces (the astronaut, and CelebA identities from the
shared data when present).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from sdesr_gui.core import faces, gallery
from sdesr_gui.core.gallery import (Embedder, EmbedderUnavailable, GalleryIndex, IndexCancelled,
                                    default_cache_dir, evaluate_identification, get_embedder, identity_of)
from sdesr_gui.core.video import InputError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
CELEBA = SHARED / "data" / "celeba"


class ColourEmbedder(Embedder):
    """Stand-in embedder: colour statistics; an almost black image has 'no face'."""

    name = "colour-test"
    dim = 8

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def _vec(self, rgb: np.ndarray) -> np.ndarray:
        a = rgb.astype(np.float32) / 255.0
        v = np.concatenate([a.reshape(-1, 3).mean(0), a[: a.shape[0] // 2].reshape(-1, 3).mean(0),
                            [a.std(), 0.1]]).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed_aligned(self, frames):
        return np.stack([self._vec(f) for f in frames])

    def embed_image(self, rgb):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if rgb.mean() < 3:
            return None, None
        h, w = rgb.shape[:2]
        return self._vec(rgb), faces.Face((0.0, 0.0, float(w), float(h)), 1.0, np.zeros((5, 2)))


def _img(path: Path, colour, size=(40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(colour))) % 2**32)
    a = np.clip(np.array(colour, np.float32) + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(a.astype(np.uint8)).save(path)
    return path


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns,
                                                      hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def small_gallery(tmp_path: Path) -> Path:
    g = tmp_path / "gallery"
    _img(g / "alice" / "a1.png", (200, 40, 40))
    _img(g / "alice" / "2019" / "a2.png", (210, 50, 45))
    _img(g / "bob" / "b1.png", (40, 200, 40))
    _img(g / "carol.png", (40, 40, 200))
    (g / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    (g / "notes.png").write_text("not an image at all")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(g / "black.png")
    (g / "readme.txt").write_text("ignored: not an image extension")
    _img(g / ".hidden.png", (1, 2, 3))
    return g


def test_identity_rule() -> None:
    assert identity_of("Alice/2019/a.jpg") == "Alice"
    assert identity_of("Bob.jpg") == "Bob"
    assert identity_of(Path("Carol") / "x.png") == "Carol"


def test_index_is_incremental_and_never_writes_into_the_gallery(small_gallery: Path, tmp_path: Path) -> None:
    g = small_gallery
    emb = ColourEmbedder()
    idx = GalleryIndex(g, emb, cache_dir=tmp_path / "cache")
    before = _snapshot(g)

    seen = []
    rep = idx.update(progress=lambda d, n, f: seen.append((d, n)))
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (4, 0, 0, 0)
    assert seen[-1] == (7, 7) and len(seen) == 7  # 7 image files; .txt and hidden ones ignored
    reasons = dict(rep.skipped)
    assert set(reasons) == {"broken.jpg", "notes.png", "black.png"}
    assert "no face" in reasons["black.png"] and "broken.jpg" in reasons["broken.jpg"]
    assert len(idx) == 4 and idx.identities() == ["alice", "bob", "carol"]
    assert emb.calls == 5  # the two unreadable files never reach the embedder
    assert _snapshot(g) == before
    assert idx.db_path.parent == tmp_path / "cache"

    # nothing changed: nothing is read or embedded again; bad files are still reported
    emb.calls = 0
    rep = idx.update()
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (0, 0, 0, 4)
    assert {f for f, _ in rep.skipped} == {"broken.jpg", "notes.png", "black.png"} and emb.calls == 0

    # touched (new mtime, same bytes): hashed, not embedded
    st = (g / "bob" / "b1.png").stat()
    os.utime(g / "bob" / "b1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    rep = idx.update()
    assert (rep.added, rep.updated, rep.unchanged) == (0, 0, 4) and emb.calls == 0

    # changed content, a new file, a renamed file, a removed file, a fixed file
    _img(g / "bob" / "b1.png", (30, 160, 90))
    _img(g / "dave" / "d1.png", (120, 120, 20))
    (g / "carol.png").rename(g / "erin.png")
    (g / "alice" / "2019" / "a2.png").unlink()
    _img(g / "black.png", (90, 30, 160), size=(30, 30))
    emb.calls = 0
    rep = idx.update()
    assert rep.updated == 2  # b1 and black.png (now with a 'face')
    assert rep.added == 2  # dave and erin (erin reuses carol's embedding: same bytes)
    assert rep.removed == 2  # carol.png and a2.png
    assert rep.unchanged == 1  # a1
    assert emb.calls == 3  # b1, d1, black -- not erin
    assert {f for f, _ in rep.skipped} == {"broken.jpg", "notes.png"}
    assert idx.identities() == ["alice", "black", "bob", "dave", "erin"]
    files, ids, shas, vecs = idx.entries()
    assert "carol.png" not in files and "alice/2019/a2.png" not in files and len(files) == 5
    # no index, journal or lock file ever appears in the gallery
    after = _snapshot(g)
    assert not [f for f in after if "sqlite" in f or f.endswith(("-wal", "-shm", "-journal"))]
    assert set(after) == {"alice/a1.png", "bob/b1.png", "dave/d1.png", "erin.png", "black.png", "broken.jpg",
                          "notes.png", "readme.txt", ".hidden.png"}


def test_cache_folder_inside_the_gallery_is_refused(small_gallery: Path) -> None:
    with pytest.raises(InputError, match="inside the gallery"):
        GalleryIndex(small_gallery, ColourEmbedder(), cache_dir=small_gallery / "cache")
    with pytest.raises(InputError, match="does not exist"):
        GalleryIndex(small_gallery / "nope", ColourEmbedder(), cache_dir=small_gallery.parent / "c")


def test_default_cache_respects_xdg(monkeypatch, small_gallery: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sdesr_gui" / "galleries"
    idx = GalleryIndex(small_gallery, ColourEmbedder())
    idx.update()
    # $XDG_CACHE_HOME/sdesr_gui/galleries/<sha256 of the resolved folder + embedder>.sqlite
    key = hashlib.sha256((str(small_gallery.resolve()) + "\0" + "colour-test").encode()).hexdigest()
    assert idx.db_path == tmp_path / "xdg" / "sdesr_gui" / "galleries" / f"{key}.sqlite"
    assert idx.db_path.is_file()
    # another embedding space of the same gallery is another database
    other = type("Other", (ColourEmbedder,), {"name": "colour-test-2"})()
    assert GalleryIndex(small_gallery, other).db_path != idx.db_path
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says: ignore it
    assert default_cache_dir().is_absolute()


def test_cancel_keeps_what_was_indexed(small_gallery: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stop = threading.Event()
    emb = ColourEmbedder()

    def progress(done, total, name):
        if done == 3:
            stop.set()

    rep = GalleryIndex(small_gallery, emb, cache_dir=cache).update(progress=progress, cancel=stop)
    assert rep.cancelled and "cancelled" in rep.summary()
    done_before = rep.added
    assert 1 <= done_before < 4
    # a plain callable works as well, and raise_on_cancel turns the report into an exception
    with pytest.raises(IndexCancelled) as e:
        GalleryIndex(small_gallery, ColourEmbedder(), cache_dir=tmp_path / "c2").update(
            cancel=lambda: True, raise_on_cancel=True)
    assert e.value.report.cancelled and e.value.report.added == 0
    emb2 = ColourEmbedder()
    rep = GalleryIndex(small_gallery, emb2, cache_dir=cache).update()
    assert rep.unchanged == done_before and rep.added == 4 - done_before


def test_an_error_mid_index_loses_nothing_committed(small_gallery: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="simulated crash"):
        GalleryIndex(small_gallery, ColourEmbedder(fail_after=2), cache_dir=cache).update()
    emb = ColourEmbedder()
    rep = GalleryIndex(small_gallery, emb, cache_dir=cache).update()
    assert rep.unchanged == 2 and rep.added == 2


CRASH_SCRIPT = r"""
import os, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from test_gallery import ColourEmbedder
from sdesr_gui.core.gallery import GalleryIndex

class Dying(ColourEmbedder):
    def embed_image(self, rgb):
        if self.calls == 2:
            os._exit(17)  # the process dies: no cleanup, no close, no commit
        return super().embed_image(rgb)

GalleryIndex(sys.argv[1], Dying(), cache_dir=sys.argv[2]).update()
"""


def test_a_killed_process_loses_nothing_committed(small_gallery: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(small_gallery), str(cache),
                        str(Path(__file__).parent)], env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 17, r.stderr.decode()[-2000:]
    emb = ColourEmbedder()
    rep = GalleryIndex(small_gallery, emb, cache_dir=cache).update()
    assert rep.unchanged == 2 and rep.added == 2 and emb.calls == 3  # 2 faces + black.png left


# ------------------------------------------------------------------------------------------ queries
def _synthetic(tmp_path: Path, rows) -> GalleryIndex:
    g = tmp_path / "g"
    g.mkdir(exist_ok=True)
    emb = ColourEmbedder()
    emb.dim = len(rows[0][2])
    idx = GalleryIndex(g, emb, cache_dir=tmp_path / "c")
    idx._write_synthetic(rows)
    return idx


def _unit(*v) -> np.ndarray:
    a = np.array(v, np.float32)
    return a / np.linalg.norm(a)


def test_query_ranks_by_cosine(tmp_path: Path) -> None:
    rows = [("a/1.jpg", "a", _unit(1, 0, 0)), ("a/2.jpg", "a", _unit(1, 0.2, 0)),
            ("b/1.jpg", "b", _unit(0.8, 0.6, 0)), ("c.jpg", "c", _unit(0, 0, 1))]
    idx = _synthetic(tmp_path, rows)
    q = np.array([2.0, 0, 0])  # not normalised: the index normalises
    got = idx.query(q, top_k=3)
    assert [c.file for c in got] == ["a/1.jpg", "a/2.jpg", "b/1.jpg"]
    assert got[0].score == pytest.approx(1.0) and got[2].score == pytest.approx(0.8)
    assert [c.identity for c in idx.query(q, top_k=3, per_identity=True)] == ["a", "b", "c"]
    assert [c.file for c in idx.query(q, top_k=2, exclude=["a/1.jpg"])] == ["a/2.jpg", "b/1.jpg"]
    assert len(idx.query(q, top_k=50)) == 4
    with pytest.raises(ValueError):
        idx.query(np.ones(5), top_k=3)


def test_query_samples_consensus_and_rank_stability(tmp_path: Path) -> None:
    rows = [("a.jpg", "a", _unit(1, 0, 0)), ("b.jpg", "b", _unit(0, 1, 0)), ("c.jpg", "c", _unit(0, 0, 1))]
    idx = _synthetic(tmp_path, rows)
    samples = np.stack([_unit(1, 0.5, 0.1), _unit(1, 0.8, 0.1), _unit(0.5, 1, 0.1)])
    res = idx.query_samples(samples, top_k=3)
    assert res.samples == 3 and len(res.per_sample) == 3
    first = res.candidates[0]
    s = samples @ np.stack([r[2] for r in rows]).T
    assert first.identity == "a" and first.mean_score == pytest.approx(s[:, 0].mean(), abs=1e-6)
    assert first.rank1_frequency == pytest.approx(2 / 3) and first.ranks == [1, 1, 2]
    b = next(c for c in res.candidates if c.identity == "b")
    assert b.rank1_frequency == pytest.approx(1 / 3) and b.ranks == [2, 2, 1]
    assert [c.identity for c in res.per_sample[2]] == ["b", "a", "c"]
    st = res.stability()
    assert st["consensus_rank1"] == "a" and st["rank1_agreement"] == pytest.approx(0.6667, abs=1e-3)
    assert st["distinct_rank1"] == 2
    d = res.to_dict()
    assert d["candidates"][0]["identity"] == "a" and len(d["per_sample"]) == 3


def test_evaluate_identification_excludes_the_probe_photo(tmp_path: Path) -> None:
    rows = [("a/1.jpg", "a", _unit(1, 0, 0)), ("a/2.jpg", "a", _unit(1, 0.3, 0)),
            ("b/1.jpg", "b", _unit(0.7, 0.7, 0)), ("c/1.jpg", "c", _unit(0, 0, 1))]
    idx = _synthetic(tmp_path, rows)
    probes = np.stack([_unit(1, 0, 0), _unit(0.6, 0.75, 0), _unit(0, 0.1, 1), _unit(0, 1, 0)])
    ids = ["a", "a", "c", "zed"]
    r = evaluate_identification(idx, probes, ids, exclude=[["a/1.jpg"], [], [], []])
    assert r["counted"] == 3 and r["open_set"] == 1
    # probe 0 (its own photo excluded) still finds a/2; probe 1 is closer to b than to a
    assert r["ranks"] == [1, 2, 1]
    assert r["rank1"] == pytest.approx(2 / 3) and r["rank5"] == 1.0
    assert 0.5 < r["auc"] <= 1.0
    r = evaluate_identification(idx, probes[:1], ["c"], exclude=[["c/1.jpg"]])
    assert r["counted"] == 0  # its identity has no other face: not counted


def test_evaluate_identification_consensus_of_samples(tmp_path: Path) -> None:
    """[P, S, D]: an identity scores by its mean over the samples, as query_samples ranks."""
    rows = [("a/1.jpg", "a", _unit(1, 0, 0)), ("b/1.jpg", "b", _unit(0, 1, 0)), ("c/1.jpg", "c", _unit(0, 0, 1))]
    idx = _synthetic(tmp_path, rows)
    # one sample leans to b, the other two to a: sample 1 alone ranks a second, the consensus first
    samples = np.stack([_unit(0.5, 0.8, 0), _unit(0.9, 0.3, 0), _unit(0.9, 0.2, 0.1)])[None]
    one = evaluate_identification(idx, samples[:, 0], ["a"])
    both = evaluate_identification(idx, samples, ["a"])
    assert one["ranks"] == [2] and both["ranks"] == [1] and both["samples_per_probe"] == 3
    mean_a = float(np.mean([_unit(0.5, 0.8, 0)[0], _unit(0.9, 0.3, 0)[0], _unit(0.9, 0.2, 0.1)[0]]))
    assert both["genuine_scores"][0] == pytest.approx(mean_a, abs=1e-5)
    res = idx.query_samples(samples[0], top_k=3)
    assert res.candidates[0].identity == "a" and res.candidates[0].mean_score == pytest.approx(mean_a, abs=1e-5)
    # the probe's own photo is left out for every sample
    r = evaluate_identification(idx, samples, ["a"], exclude=[["a/1.jpg"]])
    assert r["counted"] == 0
    with pytest.raises(ValueError, match="embeddings for"):
        evaluate_identification(idx, samples[0], ["a"])  # 3 embeddings, 1 probe of 1 sample


def test_bench_gallery_is_quick_enough_to_run() -> None:
    r = gallery.benchmark_query(n=500, queries=5, samples=3)
    assert r["faces"] == 500 and r["query"]["median_ms"] > 0 and r["query_samples"]["median_ms"] > 0


# ------------------------------------------------------------------------------------------ embedders
@pytest.fixture(scope="module")
def dlib_embedder():
    try:
        return get_embedder("dlib")
    except EmbedderUnavailable as e:  # pragma: no cover - dlib-bin is a dependency
        pytest.skip(str(e))


def test_dlib_embeds_the_astronaut(dlib_embedder) -> None:
    e, face = dlib_embedder.embed_image(data.astronaut())
    assert face is not None and e.shape == (128,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    frame = np.asarray(Image.open(ROOT / "resources" / "sample_face.png").convert("RGB"))
    v = dlib_embedder.embed_aligned([frame, frame[:, ::-1].copy()])
    assert v.shape == (2, 128)
    assert float(v[0] @ e) > 0.95  # the bundled frame is the same aligned face
    assert float(v[0] @ v[1]) > 0.8  # mirrored: still the same person
    none, nf = dlib_embedder.embed_image(np.full((200, 200, 3), 128, np.uint8))
    assert none is None and nf is None
    with pytest.raises(ValueError):
        dlib_embedder.embed_aligned([np.zeros((100, 100, 3), np.uint8)])
    assert get_embedder("dlib") is dlib_embedder  # loaded once


@pytest.mark.skipif(not CELEBA.is_dir(), reason="shared CelebA data is not present")
def test_dlib_ranks_the_same_identity_first(dlib_embedder, tmp_path: Path) -> None:
    by = defaultdict(list)
    for r in csv.DictReader(open(CELEBA / "identities.csv")):
        if r["source"] == "aligned":
            by[r["identity"]].append(r["file"])
    chosen = sorted((i for i, v in by.items() if len(v) >= 3), key=int)[:12]
    assert len(chosen) == 12
    g = tmp_path / "gallery"
    for ident in chosen:
        (g / ident).mkdir(parents=True)
        shutil.copy(CELEBA / "aligned" / by[ident][0], g / ident / by[ident][0])
    idx = GalleryIndex(g, dlib_embedder, cache_dir=tmp_path / "cache")
    rep = idx.update()
    assert rep.added == 12 and not rep.skipped
    hits = []
    for ident in chosen:
        for f in by[ident][1:3]:
            e, face = dlib_embedder.embed_image(np.asarray(Image.open(CELEBA / "aligned" / f).convert("RGB")))
            assert e is not None
            hits.append(idx.query(e, top_k=1, per_identity=True)[0].identity == ident)
    print(f"dlib rank-1 on {len(chosen)} CelebA identities: {np.mean(hits):.3f} over {len(hits)} queries")
    assert np.mean(hits) >= 0.9, f"rank-1 {np.mean(hits):.2f} over {len(hits)} queries"


@pytest.mark.skipif(not (CELEBA / "wild").is_dir(), reason="shared CelebA data is not present")
def test_dlib_ranks_the_same_identity_first_on_wild_photos(dlib_embedder, tmp_path: Path, monkeypatch) -> None:
    """The analyst's case: raw photos (not aligned), two gallery photos per identity in sub-folders,
    the other photos of each identity as probes, through the default cache location."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    by = defaultdict(list)
    for r in csv.DictReader(open(CELEBA / "identities.csv")):
        if r["source"] == "wild":
            by[r["identity"]].append(r["file"])
    chosen = sorted((i for i, v in by.items() if len(v) >= 3), key=int)[:10]
    if len(chosen) < 10:
        pytest.skip("the shared data holds fewer than 10 in-the-wild identities with 3 photos")
    g = tmp_path / "gallery"
    for ident in chosen:
        (g / ident).mkdir(parents=True)
        for f in sorted(by[ident])[:2]:
            shutil.copy(CELEBA / "wild" / f, g / ident / f)
    before = _snapshot(g)
    idx = GalleryIndex(g, dlib_embedder)
    rep = idx.update()
    assert rep.added + len(rep.skipped) == 20 and rep.added >= 18, rep.skipped
    assert _snapshot(g) == before and not any(p.suffix.startswith(".sqlite") for p in g.rglob("*"))
    hits = []
    for ident in chosen:
        for f in sorted(by[ident])[2:4]:  # at most two probes per identity keeps the test fast
            e, _ = dlib_embedder.embed_image(np.asarray(Image.open(CELEBA / "wild" / f).convert("RGB")))
            if e is None:
                continue
            hits.append(idx.query(e, top_k=1, per_identity=True)[0].identity == ident)
    print(f"dlib rank-1 on {len(chosen)} in-the-wild CelebA identities: {np.mean(hits):.3f} over {len(hits)} queries")
    assert len(hits) >= 15
    assert np.mean(hits) >= 0.9, f"rank-1 {np.mean(hits):.2f} over {len(hits)} queries"


def test_facenet_offline_message(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dest):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(gallery, "_download", offline)
    with pytest.raises(EmbedderUnavailable) as e:
        gallery.FacenetEmbedder()
    msg = str(e.value)
    assert "could not be downloaded" in msg and "dlib" in msg and "\n" not in msg
    assert gallery.facenet_weights_path().parent == tmp_path / "torch" / "checkpoints"
    with pytest.raises(EmbedderUnavailable, match="does not exist"):
        gallery.FacenetEmbedder(tmp_path / "missing.pt")


def test_facenet_local_weights_file(tmp_path: Path) -> None:
    import torch
    from facenet_pytorch import InceptionResnetV1
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    st = tmp_path / "facenet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    pt = tmp_path / "facenet.pt"
    torch.save(state, pt)
    frame = np.asarray(Image.open(ROOT / "resources" / "sample_face.png").convert("RGB"))
    a = gallery.FacenetEmbedder(st)
    b = gallery.FacenetEmbedder(pt)
    ea, eb = a.embed_aligned([frame]), b.embed_aligned([frame])
    assert ea.shape == (1, 512) and np.allclose(ea, eb, atol=1e-5)
    assert np.linalg.norm(ea[0]) == pytest.approx(1.0, abs=1e-5)
    # each weights file is its own embedding space (its own index database)
    assert a.cache_key.startswith("facenet-") and a.cache_key != b.cache_key
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(EmbedderUnavailable, match="InceptionResnetV1"):
        gallery.FacenetEmbedder(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(EmbedderUnavailable, match="could not be read"):
        gallery.FacenetEmbedder(junk)
    with pytest.raises(EmbedderUnavailable, match="Unknown face embedder"):
        get_embedder("arcface")
