"""``sdesr index``, ``match``, ``eval-match`` and ``bench-gallery``: a gallery of known faces."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from .common import EXIT_INTERRUPTED, UsageError, add_sampling_job_args, check_out_dir, load_enhancer, \
    settings_from_args, warn


def _gallery_args(p, need_gallery=True):
    """The gallery and embedder flags of the four gallery commands."""
    if need_gallery:
        p.add_argument("--gallery", required=True, metavar="GALLERY", help="folder of known faces (only read)")
    p.add_argument("--embedder", choices=["dlib", "facenet"], default="dlib",
                   help="face embedder: dlib (offline, default) or facenet (VGGFace2; downloads its weights)")
    p.add_argument("--embedder-weights", metavar="PATH",
                   help="facenet: a local weights file; dlib: a folder with its model files")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where the index lives (default: the user cache folder; never inside the gallery)")
    _backend_args(p)


def _backend_args(p):
    p.add_argument("--backend", choices=("auto", "exact", "faiss", "milvus"), default="auto",
                   help="search backend: exact (numpy, all faces in memory), faiss (an index on disk beside "
                        "the cache; approximate above 50,000 faces, every score re-computed exactly), milvus (a "
                        "server: --milvus-uri) or auto (exact below 200,000 faces, faiss above; the default)")
    p.add_argument("--milvus-uri", metavar="URI", default=os.environ.get("SDESR_MILVUS_URI"),
                   help="Milvus server or cluster (http://host:19530; credentials from $MILVUS_TOKEN) or a local "
                        ".db file for milvus-lite (default: $SDESR_MILVUS_URI)")
    p.add_argument("--faiss-index", metavar="SPEC", default=None,
                   help="faiss index factory string (default: chosen by the gallery's size, e.g. IVF4096,SQ8)")
    p.add_argument("--nprobe", type=int, default=None,
                   help="faiss inverted-file lists searched per probe (default: tuned to 0.97 recall@10 at build)")


def _backend_options(args) -> dict:
    return {"milvus_uri": getattr(args, "milvus_uri", None), "faiss_spec": getattr(args, "faiss_index", None),
            "nprobe": getattr(args, "nprobe", None)}


def _embedder_from_args(args):
    from ..core.gallery import get_embedder

    return get_embedder(args.embedder, args.embedder_weights)


def _open_index(args, embedder):
    from ..core.gallery import GalleryIndex

    gallery = Path(args.gallery).expanduser()
    if not gallery.is_dir():
        raise UsageError(f"the gallery folder {gallery} does not exist" if not gallery.exists()
                         else f"the gallery {gallery} is not a folder")
    if args.backend == "milvus" and not args.milvus_uri:
        raise UsageError("--backend milvus needs --milvus-uri (http://host:19530, or a local .db file)")
    return GalleryIndex(gallery, embedder, cache_dir=args.cache_dir, backend=args.backend,
                        backend_options=_backend_options(args))


@contextlib.contextmanager
def _stage_bar(desc: str, disable: bool):
    """A percentage bar on stderr fed by ``progress(stage, fraction)`` callbacks (yielded)."""
    from tqdm import tqdm

    with tqdm(total=100, desc=desc, file=sys.stderr, disable=disable,
              bar_format="{desc}: {percentage:3.0f}% {postfix}") as bar:
        def progress(stage, frac):
            bar.set_postfix_str(stage)
            bar.n = int(100 * frac)
            bar.refresh()

        yield progress


def _sync_backend(index, quiet: bool) -> None:
    """Build or catch up the search backend, with a progress bar (a first faiss build takes a while)."""
    with _stage_bar("search index", quiet) as progress:
        try:
            index.search_backend(progress=progress)
        except KeyboardInterrupt:
            print("sdesr: interrupted; the search index is built again next time", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None


def _update_index(index, quiet: bool, verbose_skips: bool = True, workers: int = 1):
    from tqdm import tqdm

    from ..core.gallery import IndexCancelled

    with tqdm(desc="index", unit="file", file=sys.stderr, disable=quiet) as bar:
        def progress(done, total, name=""):
            bar.total = total
            bar.update(done - bar.n)

        try:
            rep = index.update(progress=progress, workers=workers)
        except KeyboardInterrupt:
            print("sdesr: interrupted; every file indexed so far is kept", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except IndexCancelled as e:  # pragma: no cover - the CLI has no cancel button
            rep = e.report
    if verbose_skips and not quiet:
        for f, why in rep.skipped:
            warn(f"skipped {f}: {why}")
    _sync_backend(index, quiet)
    return rep


def cmd_index(args) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    emb = _embedder_from_args(args)
    index = _open_index(args, emb)
    rep = _update_index(index, args.quiet, workers=args.workers)
    search = index.backend_info()
    if args.json:
        print(json.dumps({"gallery": str(index.folder), "database": str(index.db_path), "embedder": emb.info(),
                          "search": search, "workers": args.workers, **rep.to_dict()}, indent=2))
    else:
        rate = (rep.added + rep.updated) / rep.seconds if rep.seconds > 0 else 0.0
        print(f"{index.folder}: {rep.summary()} ({rep.seconds:.1f} s, {rate:.1f} faces/s with {args.workers} "
              f"worker(s); index {index.db_path}; search {search.get('backend')}"
              + (f" {search['spec']}" if search.get("spec") else "") + ")")
    return 0


def _probe_frame(path: Path, min_prob: float = 0.9):
    """A probe image as a canonical face frame: 128x128 as is, 16x16 as LR (bicubic), else detected."""
    from ..core import faces
    from ..core.video import load_still

    notes: list[str] = []
    img = load_still(path, notes=notes)
    for n in notes:  # e.g. transparency filled with mid-grey
        warn(n)
    role = faces.image_role(img)
    if role == "frame":
        return img, "frame"
    if role == "lr":
        return faces.to_uint8(faces.upsample(faces.to_tensor(img)))[0], "lr (bicubic)"
    found = faces.detect_faces(img, min_prob=min_prob)
    if not found:
        return None, "no face"
    return faces.align_face(img, found[0].landmarks)[0], "detected"


def _probe_kind(path: Path, how: str, forced: str) -> str:
    """The calibration kind of a probe: ``forced`` unless "auto"; else a 16x16 LR is "bicubic",
    a 128x128 PNG labelled generated is "mean" (a ``*_mean`` file) or "sample", anything else "hr"."""
    if forced != "auto":
        return forced
    if how.startswith("lr"):
        return "bicubic"
    if how == "frame":
        try:
            from PIL import Image

            from ..core.provenance import GENERATED_NOTICE

            with Image.open(path) as im:
                generated = (getattr(im, "text", None) or {}).get("Comment") == GENERATED_NOTICE
        except Exception:  # noqa: BLE001 - an unreadable label is an unlabelled image
            generated = False
        if generated:
            return "mean" if path.stem.endswith("_mean") else "sample"
    return "hr"


def _rate_cell(cand: dict) -> str:
    from ..core.calibration import short_rate

    return short_rate(cand.get("calibration"))


def _match_json_target(value, gallery: Path, probes) -> "Path | None":
    """``--json``: None (no JSON), ``-``/no value (stdout: returns None) or a file outside the
    gallery and the probes' folders (those are evidence and never written to)."""
    from ..core.provenance import is_inside

    if value is None or value == "-":
        return None
    target = Path(value).expanduser()
    if target.exists() and target.is_dir():
        raise UsageError(f"--json {target} is a folder; give a file name")
    folders = [gallery] + [Path(p).expanduser() if Path(p).expanduser().is_dir() else Path(p).expanduser().parent
                           for p in probes]
    for d in folders:
        if is_inside(target, d):
            raise UsageError(f"--json {target} is inside {d}; galleries and probes are evidence and are "
                             "never written to, so choose a file elsewhere")
    return target


def cmd_match(args) -> int:
    from ..core.video import iter_image_files

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    probes = iter_image_files(args.probes)
    emb = _embedder_from_args(args)
    index = _open_index(args, emb)
    json_file = _match_json_target(args.json, index.folder, args.probes)
    from ..core import calibration as cal

    frames, kinds = [], []
    for p in probes:
        fr, how = _probe_frame(p)
        if fr is None:
            raise UsageError(f"no face was found in the probe {p.name}; crop it with `sdesr detect` "
                             f"(--box for a face the detector misses)")
        frames.append(fr)
        kinds.append(_probe_kind(p, how, args.probe_kind))
    calib = cal.load_calibration(emb.cache_key, args.calibration) if args.calibration != "none" else None
    if not args.no_update:
        _update_index(index, args.quiet or args.json == "-", verbose_skips=False)
    if len(index) == 0:
        raise UsageError(f"the gallery {index.folder} holds no indexed face")
    vecs = emb.embed_aligned(frames)
    bic_vecs = None
    if args.bicubic:  # the baseline: each probe's own 16x16 LR, bicubic-upsampled
        from ..core import faces

        bic = faces.to_uint8(faces.upsample(faces.degrade(faces.frames_to_tensor(frames))))
        bic_vecs = emb.embed_aligned(bic)

    n_faces = len(index)

    def listed(v, kind):
        out = [{"identity": c.identity, "file": str(index.path_of(c.file)), "score": round(c.score, 6)}
               for c in index.query(v, args.top, per_identity=not args.per_file)]
        cal.annotate(out, calib, kind, n_faces)
        return out

    results = []
    for k, (p, v) in enumerate(zip(probes, vecs)):
        results.append({"probe": str(p), "probe_kind": kinds[k], "candidates": listed(v, kinds[k])})
        if bic_vecs is not None:
            results[-1]["bicubic_candidates"] = listed(bic_vecs[k], "bicubic")
    consensus = index.query_samples(vecs, args.top) if args.consensus and len(vecs) > 1 else None
    cons_doc = None
    if consensus is not None:
        from ..core.matching import CONSENSUS_RATE_NOTE

        cons_doc = consensus.to_dict()
        for c in cons_doc["candidates"]:
            c["file"] = str(index.path_of(c["file"]))
        cal.annotate(cons_doc["candidates"], calib, kinds[0], n_faces, key="mean_score", note=CONSENSUS_RATE_NOTE)
    if args.json:
        from ..core.matching import calibration_summary

        if cons_doc is not None:
            text = json.dumps({"probes": results, "consensus": cons_doc,
                               "calibration": calibration_summary(calib)}, indent=2)
        else:  # one list, as always; each candidate carries its own "calibration"
            text = json.dumps(results, indent=2)
        if json_file is None:
            print(text)
            return 0
        from ..core.provenance import atomic_write_text

        json_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_file, text + "\n")
        if not args.quiet:
            print(f"{len(results)} probe(s) ranked against {index.folder} -> {json_file}", file=sys.stderr)
        return 0
    print(f"gallery {index.folder} ({len(index)} faces, embedder {emb.name}); candidates are investigative "
          "leads, not identifications")
    if calib is None:
        print("no score calibration for this embedder: scores are raw cosines (higher = more similar); "
              "they are not probabilities")
    else:
        print("cosine: raw embedding similarity (higher = more similar). 'strangers >=': how often a stranger's "
              f"photo scores at least this high for this kind of probe (calibration: {Path(calib.path).name})")

    def show(cands):
        print(f"  {'':4s} {'cosine':>7s}  {'strangers >=':>16s}  {'identity':24s} file")
        for k, c in enumerate(cands, 1):
            print(f"  {k:3d}. {c['score']:7.4f}  {_rate_cell(c):>16s}  {c['identity']:24s} {c['file']}")
        if cands and cands[0].get("calibration"):
            print(f"       top candidate: {cands[0]['calibration']['text']}")

    for r in results:
        print(f"\n{r['probe']} (probe kind: {r['probe_kind']})")
        show(r["candidates"])
        if "bicubic_candidates" in r:
            print("  bicubic baseline of its 16x16 LR:")
            show(r["bicubic_candidates"])
    if consensus is not None:
        st = consensus.stability()
        print(f"\nconsensus over {consensus.samples} samples (rank-1 agreement {st.get('rank1_agreement', 0):.0%}, "
              f"{st.get('distinct_rank1', 0)} distinct rank-1 identities)")
        print(f"  {'':3s}  {'mean':>6s} {'sd':>6s} {'rank1':>6s} {'mean rank':>9s} {'strangers >=':>16s}  identity")
        for k, (c, d) in enumerate(zip(consensus.candidates, cons_doc["candidates"]), 1):
            print(f"  {k:3d}. {c.mean_score:6.4f} {c.std_score:6.4f} {c.rank1_frequency:6.0%} {c.mean_rank:9.1f} "
                  f"{_rate_cell(d):>16s}  {c.identity}")
        if calib is not None:
            print(f"  ({CONSENSUS_RATE_NOTE})")
    return 0


def _probe_files(folder: Path) -> list[tuple[Path, str]]:
    from ..core.gallery import identity_of
    from ..core.video import is_still_file

    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_still_file(name):
                p = Path(root) / name
                out.append((p, identity_of(p.relative_to(folder))))
    return out


#: eval-match's probe kinds -> calibration kinds
CAL_KIND = {"hr": "hr", "bicubic": "bicubic", "sr": "sample", "mean": "mean"}


def cmd_eval_match(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..core import calibration as cal
    from ..core import faces
    from ..core.gallery import evaluate_identification
    from ..core.metrics import metric_legend, metric_tooltip
    from ..core.provenance import atomic_write_text, device_info, sha256_file, to_json, versions

    probes_dir = Path(args.probes).expanduser()
    if not probes_dir.is_dir():
        raise UsageError(f"the probe folder {probes_dir} does not exist or is not a folder")
    if args.json:
        check_out_dir(Path(args.json).expanduser().parent, [probes_dir.resolve(), Path(args.gallery).resolve()])
    settings = None if args.no_sr else settings_from_args(args)
    emb = _embedder_from_args(args)
    index = _open_index(args, emb)
    items = _probe_files(probes_dir)[: args.limit] if args.limit else _probe_files(probes_dir)
    if not items:
        raise UsageError(f"no probe images were found in {probes_dir}")
    enh = None
    if settings is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        enh = load_enhancer(args, need_classifier=any(v is not None for v in settings.attributes.values()))
    rep = _update_index(index, args.quiet, verbose_skips=False)
    files, _, shas, _ = index.entries()
    by_sha: dict[str, list[str]] = {}
    for f, s in zip(files, shas):
        by_sha.setdefault(s, []).append(f)

    hr, ids, exclude, used, skipped = [], [], [], [], []
    for p, ident in tqdm(items, desc="probes", unit="face", file=sys.stderr, disable=args.quiet):
        fr, how = _probe_frame(p)
        if fr is None:
            skipped.append((str(p), how))
            continue
        hr.append(fr)
        ids.append(ident)
        exclude.append(by_sha.get(sha256_file(p), []))  # a probe never matches its own photo
        used.append(str(p))
    if not hr:
        raise UsageError(f"no face was found in any probe image in {probes_dir}")
    t0 = time.perf_counter()
    hr_t = faces.frames_to_tensor(hr)
    lr = enh.degrade(hr_t) if enh is not None else faces.degrade(hr_t)  # the model's LR (8x8 for 16x)
    kinds = {"hr": hr, "bicubic": faces.to_uint8(faces.upsample(lr))}
    sr_seconds = None
    n_samples = max(1, int(settings.samples)) if settings is not None else 1
    if enh is not None:
        sr, consensus = [], []
        with tqdm(total=len(hr), desc="super-resolve" + (f" x{n_samples}" if n_samples > 1 else ""), unit="face",
                  file=sys.stderr, disable=args.quiet) as bar:
            if n_samples == 1:  # one sample per probe, batched (face i of a batch: seed + i)
                b = max(1, int(args.batch))
                for k in range(0, len(hr), b):
                    s = enh.run_many(lr[k:k + b], settings)
                    sr += faces.to_uint8(s)
                    bar.update(s.shape[0])
            else:  # K samples of each probe (seeds seed .. seed + K - 1): "sr" is the first, "consensus" all K
                for k in range(len(hr)):
                    s = faces.to_uint8(enh.run_many(lr[k:k + 1].expand(n_samples, -1, -1, -1), settings))
                    sr.append(s[0])
                    consensus += s
                    bar.update(1)
        kinds["sr"] = sr
        if consensus:
            kinds["consensus"] = consensus
        sr_seconds = time.perf_counter() - t0
        kinds["mean"] = [faces.to_uint8(enh.mean_estimate(lr[k:k + 1], settings.mean_mirror))[0]
                         for k in range(len(hr))]
    vec = {k: emb.embed_aligned(v) for k, v in kinds.items()}
    if "consensus" in vec:
        vec["consensus"] = vec["consensus"].reshape(len(hr), n_samples, -1)
    calib = cal.load_calibration(emb.cache_key, args.calibration) if args.calibration != "none" else None
    g_files, g_ids, _, g_emb = index.entries()
    table = {}
    for k, v in vec.items():
        r = evaluate_identification(index, v, ids, exclude)
        r["cs_to_hr"] = float(np.mean(np.sum(v * (vec["hr"][:, None] if v.ndim == 3 else vec["hr"]), axis=-1)))
        kc = calib.kind(CAL_KIND[k]) if calib is not None and k in CAL_KIND else None
        if kc is not None:
            _, imp = cal.pair_scores(v, ids, g_emb, g_ids, [set(e) for e in exclude], g_files)
            r["calibration_check"] = cal.verify(kc, imp)
        table[k] = r
    print(f"gallery {index.folder}: {rep.faces} faces, {len(index.identities())} identities; "
          f"{len(hr)} probes ({table['hr']['counted']} with their identity in the gallery), embedder {emb.name}")
    print(f"{'probe':10s} {'Rank-1 ↑':>8s} {'Rank-5 ↑':>8s} {'Rank-10 ↑':>9s} {'AUC ↑':>7s} {'CS→HR ↑':>8s}")
    for k, r in table.items():
        print(f"{k:10s} {r['rank1']:8.3f} {r['rank5']:8.3f} {r['rank10']:9.3f} {r['auc']:7.3f} {r['cs_to_hr']:8.3f}")
    for key in ("rank1", "auc", "cs_to_hr"):
        print(f"  {metric_tooltip(key)}")
    if "mean" in table:
        print("(sr: one generated sample per probe; mean: the model's mean estimate, an estimate, not a sample)")
    if "consensus" in table:
        print(f"(consensus: {n_samples} samples per probe, each identity ranked by its mean score over them)")
    if calib is not None:
        print(f"\ncalibrated false-match rates ({Path(calib.path).name}) against these probes' strangers "
              "(single comparisons, a probe's own photo left out):")
        print(f"{'probe':10s} {'threshold':>9s} {'predicted':>10s} {'observed':>10s} {'events':>7s} {'ratio':>6s}")
        for k, r in table.items():
            for row in r.get("calibration_check", []):
                print(f"{k:10s} {row['threshold']:9.3f} {row['predicted_fmr']:10.2e} {row['observed_fmr']:10.2e} "
                      f"{row['observed_events']:7d} " + ("     –" if row["ratio"] is None else f"{row['ratio']:6.2f}"))
    if skipped and not args.quiet:
        warn(f"{len(skipped)} probe(s) without a face were left out")
    if args.json:
        report = {"gallery": str(index.folder), "probes_folder": str(probes_dir), "embedder": emb.info(),
                  "index": rep.to_dict(), "probes": used, "probe_identities": ids, "skipped_probes": skipped,
                  "results": table, "sampler": settings.to_dict() if settings else None,
                  "model": enh.model_info if enh else None, "sr_seconds": sr_seconds,
                  "versions": versions(), "device": device_info(str(enh.device) if enh else "cpu"),
                  "notice": "Rank-N and AUC of an evaluation set; candidates are leads, not identifications.",
                  "metric_legend": metric_legend(["rank1", "rank5", "rank10", "auc", "cs_to_hr", "fmr"])}
        target = Path(args.json).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, to_json(report))
    return 0


def cmd_bench_gallery(args) -> int:
    import numpy as np

    from ..core.gallery import benchmark_query
    from ..core.provenance import device_info

    if args.size < 1 or args.queries < 1 or args.samples < 1:
        raise UsageError("--faces, --queries and --samples must be at least 1")
    if args.backend == "auto":  # a benchmark measures one backend: exact unless told
        args.backend = "exact"
    opts = _backend_options(args)
    workdir = Path(args.workdir).expanduser() if args.workdir else None
    if args.backend == "milvus" and not opts.get("milvus_uri"):
        if workdir is None:
            raise UsageError("--backend milvus needs --milvus-uri, or --workdir for a local milvus-lite file")
        opts["milvus_uri"] = str(workdir / "milvus.db")
    with _stage_bar("bench", args.json) as progress:
        try:
            r = benchmark_query(n=args.size, dim=args.dim, queries=args.queries, samples=args.samples,
                                top_k=args.top, backend=args.backend, backend_options=opts, workdir=workdir,
                                distribution=args.distribution, rebuild=not args.reuse_index,
                                threads=args.threads, progress=progress)
        except KeyboardInterrupt:
            print("sdesr: interrupted", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None
    if args.embed:
        try:
            emb = _embedder_from_args(args)
            from PIL import Image

            frame = np.asarray(Image.open(Path(__file__).resolve().parents[2] / "resources" /
                                          "sample_face.png").convert("RGB"))
            emb.embed_aligned([frame])
            times = []
            for _ in range(5):
                t = time.perf_counter()
                emb.embed_aligned([frame])
                times.append((time.perf_counter() - t) * 1000)
            r["embed_ms"] = {"embedder": emb.name, "median_ms": float(np.median(times))}
        except Exception as e:  # noqa: BLE001 - the embedding time is optional
            r["embed_ms"] = {"error": str(e)}
    d = device_info("cpu")
    r["device"] = d
    if args.json:
        print(json.dumps(r, indent=2, default=str))
        return 0
    k = r["top_k"]
    print(f"machine: {d.get('cpu')}, {d.get('cpu_count')} cores; numpy {np.__version__}")
    print(f"synthetic gallery: {r['faces']:,} faces, {r['identities']:,} identities, {r['dim']}-D, {r['distribution']} "
          f"(genuine cosine {r['genuine_cosine']:.3f}, impostor {r['impostor_cosine'][0]:.3f} ± "
          f"{r['impostor_cosine'][1]:.3f}); SQLite {r['database_bytes'] / 2**20:,.0f} MiB"
          + (" (reused)" if r["database_reused"] else f", written in {r['write_seconds']:.1f} s"))
    info = r.get("backend_info", {})
    print(f"backend {r['backend']}" + (f" ({info.get('spec')}, nprobe {info.get('nprobe')})" if info.get("spec") else "")
          + (f": built in {r['build_seconds']:.1f} s" if r.get("build_seconds") is not None else ""))
    print(f"load {r['load_seconds']:.2f} s; recall@{k} vs exact {r[f'recall_at_{k}']:.3f} (rank-1 identity as exact "
          f"search's: {r['rank1_identity_as_exact']:.0%}); memory of the querying "
          f"process: {r['rss_after_queries_mib'] - r['rss_before_mib']:,.0f} MiB for the gallery ("
          f"{r['rss_after_queries_mib']:,.0f} MiB resident after the queries, peak {r['rss_peak_mib']:,.0f} MiB)"
          + (f"; index file {r['index_bytes'] / 2**20:,.0f} MiB" if r.get("index_bytes") else ""))
    for key, label in (("query", f"one probe, top-{k} faces"),
                       ("query_per_identity", f"one probe, top-{k} identities"),
                       ("query_samples", f"{r['samples']} samples, consensus")):
        s = r[key]
        print(f"{label:34s} median {s['median_ms']:7.2f} ms   p95 {s['p95_ms']:7.2f} ms   max {s['max_ms']:7.2f} ms")
    if "embed_ms" in r and "median_ms" in r["embed_ms"]:
        print(f"embedding one probe ({r['embed_ms']['embedder']}): {r['embed_ms']['median_ms']:.1f} ms")
    return 0


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    ix = sub.add_parser("index", help="index a gallery folder of known faces (incremental)",
                        description="Embed the largest face of every image in GALLERY (recursively; identity = "
                        "sub-folder name, else file stem). Only new and changed files are embedded again; "
                        "the index lives in the user cache folder, never in the gallery.")
    ix.add_argument("gallery", metavar="GALLERY")
    _gallery_args(ix, need_gallery=False)
    ix.add_argument("--workers", type=int, default=1,
                    help="processes embedding faces in parallel (1; each loads the embedder once; a killed or "
                         "cancelled run keeps every face stored and the next run goes on from there)")
    ix.add_argument("--json", action="store_true", help="print the report as JSON")
    ix.add_argument("--quiet", action="store_true")
    ix.set_defaults(func=cmd_index)

    m = sub.add_parser("match", help="rank gallery identities for probe faces",
                       description="Rank the gallery for each probe: a 128x128 image is taken as an aligned face "
                       "frame (e.g. a sample from `sdesr enhance`), a 16x16 one as an LR input (bicubic), any "
                       "other photo is detected and aligned. The index is brought up to date first. Candidates "
                       "are investigative leads, not identifications.")
    m.add_argument("probes", nargs="+", metavar="PROBE", help="probe images or folders")
    _gallery_args(m)
    m.add_argument("--top", type=int, default=10, metavar="K", help="candidates per probe (10)")
    m.add_argument("--per-file", action="store_true", help="rank gallery files, not identities")
    m.add_argument("--consensus", action="store_true",
                   help="the probes are samples of one face: add the mean score and rank-1 stability per candidate")
    m.add_argument("--bicubic", action="store_true",
                   help="also rank the bicubic baseline (each probe degraded to 16x16 and upsampled)")
    m.add_argument("--no-update", action="store_true", help="use the index as it is")
    m.add_argument("--probe-kind", choices=["auto", "hr", "bicubic", "sample", "mean"], default="auto",
                   help="what the probes are, for the calibrated false-match rates: auto (a 16x16 LR is bicubic, a "
                        "PNG labelled generated is a sample, or the mean estimate for *_mean files; else an HR photo)")
    m.add_argument("--calibration", default=None, metavar="FILE",
                   help="score calibration file (default: the shipped weights/match_calibration.json; 'none': "
                        "raw cosines only)")
    m.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help='write [{"probe", "probe_kind", "candidates": [{"identity", "file", "score", "calibration"}]}] '
                        'as JSON to FILE '
                        '(never inside the gallery or a probe folder); no FILE or "-": print it')
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_match)

    em = sub.add_parser("eval-match", help="Rank-1/5/10 and verification AUC of HR, bicubic and SR probes",
                        description="Align each probe (identity = sub-folder name, else file stem), degrade it "
                        "to 16x16, super-resolve it with the score model and match HR, bicubic and SR against "
                        "the gallery. A probe never matches its own photo if that is in the gallery.")
    _gallery_args(em)
    em.add_argument("--probes", required=True, metavar="DIR", help="folder of probe photos")
    em.add_argument("--limit", type=int, default=0, help="at most this many probes (0: all)")
    em.add_argument("--no-sr", action="store_true", help="HR and bicubic only (no score model needed)")
    em.add_argument("--calibration", default=None, metavar="FILE",
                    help="score calibration to check against these probes (default: the shipped one; 'none': skip)")
    add_sampling_job_args(em, "write the full report here")
    em.set_defaults(func=cmd_eval_match)

    bg = sub.add_parser("bench-gallery", help="build, load and query a synthetic gallery with a search backend",
                        description="Write a synthetic gallery of --faces 128-D faces (face-like: the spectrum of "
                        "real dlib embeddings), build the --backend's index, load it in a fresh process and time "
                        "queries; recall@10 is measured against exact search.")
    bg.add_argument("--faces", "--size", dest="size", type=int, default=10_000,
                    help="faces in the synthetic gallery (10000)")
    bg.add_argument("--dim", type=int, default=128, help="embedding size (128, as dlib)")
    bg.add_argument("--queries", type=int, default=200, help="timed queries (200)")
    bg.add_argument("--samples", type=int, default=8, help="samples per consensus query (8)")
    bg.add_argument("--top", type=int, default=10)
    bg.add_argument("--embed", action="store_true", help="also time embedding one probe")
    bg.add_argument("--distribution", choices=["face-like", "isotropic"], default="face-like",
                    help="synthetic embeddings: face-like (real dlib spectrum, default) or isotropic (worst case)")
    bg.add_argument("--workdir", metavar="DIR",
                    help="keep the synthetic database (and indexes) here and reuse it (default: a temporary folder)")
    bg.add_argument("--reuse-index", action="store_true", help="reuse the backend's index in --workdir")
    bg.add_argument("--threads", type=int, default=0, help="faiss threads when querying (0: all cores)")
    _gallery_args(bg, need_gallery=False)
    bg.add_argument("--json", action="store_true")
    bg.set_defaults(func=cmd_bench_gallery)
