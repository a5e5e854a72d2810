"""core.matching without Qt: the mean estimate is matched as its own probe, never counted as a
sample, and the consensus over samples says whether the mean estimate agrees."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sdesr_gui.core.gallery import Embedder, GalleryIndex
from sdesr_gui.core.matching import MEAN_PROBE, consensus, cs_to_reference, mean_agreement, run_match


def unit(*v) -> np.ndarray:
    a = np.array(v, np.float64)
    return a / np.linalg.norm(a)


#: gallery identities a, b, c, d as directions in 4-D
GALLERY = {"a": unit(1, 0, 0, 0), "b": unit(0, 1, 0, 0), "c": unit(0, 0, 1, 0), "d": unit(0, 0, 0, 1)}
#: probe images are tagged by their first pixel; the embedder maps the tag to a vector
VECTORS = {1: unit(1, 0.5, 0.1, 0), 2: unit(1, 0.8, 0.1, 0), 3: unit(0.5, 1, 0.1, 0),  # samples: a, a, b
           4: unit(0.1, 0.2, 1, 0.3),  # the mean estimate: c first (disagrees), then d, b
           5: unit(0, 0, 0.2, 1),  # bicubic: d
           6: unit(1, 0.4, 0, 0)}  # the reference HR: near a


def probe(tag: int) -> np.ndarray:
    img = np.zeros((128, 128, 3), np.uint8)
    img[0, 0, 0] = tag
    return img


class TagEmbedder(Embedder):
    name, dim = "tag-test", 4

    def embed_aligned(self, frames):
        return np.stack([VECTORS[int(f[0, 0, 0])] for f in frames]).astype(np.float32)

    def embed_image(self, rgb):  # not used: the gallery is written directly
        raise AssertionError


class ListIndex:
    """An index with only query(): the consensus is estimated from the top-K lists."""

    def query(self, embedding, top_k=10):
        e = np.asarray(embedding, np.float64)
        scored = sorted(((float(e @ v), k) for k, v in GALLERY.items()), reverse=True)[:top_k]
        return [SimpleNamespace(identity=k, file=f"{k}.png", score=s) for s, k in scored]


@pytest.fixture
def gallery_index(tmp_path: Path) -> GalleryIndex:
    (tmp_path / "g").mkdir()
    idx = GalleryIndex(tmp_path / "g", TagEmbedder(), cache_dir=tmp_path / "c")
    idx._write_synthetic([(f"{k}.png", k, v.astype(np.float32)) for k, v in GALLERY.items()])
    return idx


SAMPLES = [("s1", "Sample 1", probe(1)), ("s2", "Sample 2", probe(2)), ("s3", "Sample 3", probe(3))]


@pytest.mark.parametrize("kind", ["gallery_index", "list_index"])
def test_the_mean_estimate_is_its_own_probe_and_not_a_sample(kind, request):
    index = request.getfixturevalue("gallery_index") if kind == "gallery_index" else ListIndex()
    without = run_match(index, TagEmbedder(), SAMPLES, probe(5), probe(6), top_k=3)
    res = run_match(index, TagEmbedder(), SAMPLES, probe(5), probe(6), top_k=3, mean=probe(4))
    # the consensus and its stability are the samples' alone: the same with or without the mean
    assert list(res.per_sample) == ["s1", "s2", "s3"] and MEAN_PROBE not in res.per_sample
    assert res.stability == without.stability and res.stability["samples"] == 3
    strip = [{k: v for k, v in r.items() if k != "mean_estimate_rank"} for r in res.consensus]
    assert strip == without.consensus and res.consensus[0]["identity"] == "a"
    assert res.consensus[0]["rank1_frequency"] == pytest.approx(2 / 3)
    # the mean estimate's own list, and whether it agrees with the consensus
    assert [c["identity"] for c in res.mean] == ["c", "d", "b"]
    ranks = {r["identity"]: r["mean_estimate_rank"] for r in res.consensus}
    assert ranks["a"] is None and ranks["b"] == 3 and ranks.get("c", 1) == 1
    ag = res.mean_agreement
    assert ag["rank1"] == "c" and ag["lead"] == "a" and ag["agrees_on_lead"] is False and ag["lead_rank"] is None
    assert "not counted" in ag["probe"]
    # CS of the mean estimate too (against the reference), and the bicubic is unchanged
    assert set(res.cs) == {"s1", "s2", "s3", "bicubic", MEAN_PROBE} and res.cs["bicubic"] == without.cs["bicubic"]
    assert res.cs[MEAN_PROBE] == pytest.approx(float(VECTORS[4] @ VECTORS[6]), abs=1e-5)
    assert res.bicubic == without.bicubic and without.mean is None and without.mean_agreement == {}
    exp = res.to_export(["s1"])
    assert list(exp["per_sample"]) == ["Sample 1"] and exp["mean_estimate"]["candidates"] == res.mean
    assert exp["mean_estimate"]["agrees_on_lead"] is False and "mean_estimate" not in without.to_export()


def test_mean_agreement_marks_the_rows_and_says_when_the_mean_agrees():
    per = {"s1": [{"identity": "a", "file": "a", "score": 0.9}, {"identity": "b", "file": "b", "score": 0.5}],
           "s2": [{"identity": "a", "file": "a", "score": 0.8}, {"identity": "c", "file": "c", "score": 0.4}]}
    rows, st = consensus(per, top_k=3)
    mean = [{"identity": "a", "file": "a", "score": 0.95}, {"identity": "c", "file": "c", "score": 0.3}]
    ag = mean_agreement(rows, mean)
    assert ag["agrees_on_lead"] is True and ag["lead_rank"] == 1 and ag["consensus_in_top_k"] == "2/3"
    assert [r["mean_estimate_rank"] for r in rows] == [1, None, 2]  # a, b, c
    assert st["samples"] == 2  # the mean estimate is not one of them
    assert mean_agreement([], mean) == {"probe": mean_agreement([], [])["probe"], "rank1": "a"}


def test_cs_to_reference_measures_the_mean_estimate_when_given():
    cs = cs_to_reference(TagEmbedder(), SAMPLES[:1], probe(5), probe(6), mean=probe(4))
    assert set(cs) == {"s1", "bicubic", MEAN_PROBE}
    assert cs[MEAN_PROBE] == pytest.approx(float(VECTORS[4] @ VECTORS[6]), abs=1e-5)
    assert set(cs_to_reference(TagEmbedder(), SAMPLES[:1], probe(5), probe(6))) == {"s1", "bicubic"}
