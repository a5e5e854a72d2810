"""``sdesr detect``: find, align and crop the faces of a still or a video."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .common import UsageError, check_out_dir, warn


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or not all(v == v and abs(v) != float("inf") for v in vals):
        raise UsageError(f"{what} needs {n} comma-separated numbers, got {text!r}")
    return vals


def _frames_to_scan(args, src) -> list[int]:
    n = int(src.frame_count)
    if args.frame is not None:
        if not 0 <= args.frame < n:
            raise UsageError(f"--frame {args.frame} is outside {Path(args.input).name}, which has frames 0 to {n - 1}")
        return [int(args.frame)]
    if args.every is not None:
        if args.every < 1:
            raise UsageError("--every must be at least 1")
        return list(range(0, n, int(args.every)))
    if n == 1:
        return [0]
    return list(range(0, n, max(1, int(round(src.fps or 1)))))  # one frame per second


def cmd_detect(args) -> int:
    from tqdm import tqdm

    from ..core import faces
    from ..core.provenance import atomic_save_png, make_run_record, sha256_file
    from ..core.video import open_source

    inp = Path(args.input).expanduser()
    out = Path(args.out).expanduser()
    check_out_dir(out, [inp.resolve().parent] if inp.exists() else [])
    box = _floats(args.box, 4, "--box X0,Y0,X1,Y1") if args.box else None
    eyes = _floats(args.eyes, 4, "--eyes LX,LY,RX,RY") if args.eyes else None
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise UsageError("--box needs X0 < X1 and Y0 < Y1")
    if eyes is not None and (eyes[0], eyes[1]) == (eyes[2], eyes[3]):
        raise UsageError("--eyes needs two different points")
    stem = inp.stem
    record_path = out / f"{stem}_faces.json"
    if record_path.exists() and not args.overwrite:
        raise UsageError(f"{record_path} already exists; choose another output folder or pass --overwrite")

    t0 = time.perf_counter()
    with open_source(inp) as src:
        for n in src.notes:  # e.g. transparency filled with mid-grey (also in the record's input block)
            warn(n)
        frames = _frames_to_scan(args, src)
        if (box or eyes) and len(frames) != 1:
            raise UsageError("a hand-drawn --box or --eyes belongs to one frame; give --frame I")
        sha = sha256_file(inp)
        found: list[tuple[int, float, int, object]] = []  # frame, timestamp, face number, AlignedFace
        empty: list[int] = []
        with tqdm(total=len(frames), desc="detect", unit="frame", file=sys.stderr, disable=args.quiet) as bar:
            for i in frames:
                img = src.frame(i)
                if box or eyes:
                    try:
                        aligned = [faces.extract_face(img, box=box, eyes=None if eyes is None else
                                                      [eyes[:2], eyes[2:]])]
                    except ValueError as e:
                        raise UsageError(str(e)) from None
                else:
                    dets = faces.detect_faces_in_frame(img, min_face=args.min_face, min_prob=args.min_prob,
                                                       upscale=True if args.thorough else "auto")
                    aligned = [faces.extract_face(img, face=f) for f in dets]
                if not aligned:
                    empty.append(i)
                for j, af in enumerate(aligned):
                    found.append((i, src.timestamp(i), j, af))
                bar.update(1)
        info = src.info()
    seconds = time.perf_counter() - t0

    names = []
    for i, _, j, _ in found:
        base = f"{stem}_f{i:06d}_{j:02d}"
        names.append((out / f"{base}.png", out / f"{base}_lr.png"))
    if not args.overwrite:
        for pair in names:
            for p in pair:
                if p.exists():
                    raise UsageError(f"{p} already exists; choose another output folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    rec = make_run_record("detect", frame={"frames": frames})
    rec.notice = ("Aligned crops of the input (not generated); a face enlarged to fill the frame carries no "
                  "more detail than the footage.")
    rec.add_input(inp, sha256=sha, **{k: v for k, v in info.items() if k != "path"})
    method = "manual" if (box or eyes) else ("MTCNN (facenet-pytorch), tiled 2x pass" if args.thorough
                                             else "MTCNN (facenet-pytorch), tiled 2x pass when nothing is found")
    rec.extra["detector"] = {"method": method, "min_face": args.min_face, "min_prob": args.min_prob}
    rec.extra["frames_without_faces"] = empty
    rec.extra["faces"] = []
    rec.timings = {"detect_seconds": round(seconds, 4)}
    written: list[Path] = []
    try:
        for (i, ts, j, af), (crop_p, lr_p) in zip(found, names):
            d1 = atomic_save_png(crop_p, af.crop, generated=False)  # cut from the input
            written.append(crop_p)
            d2 = atomic_save_png(lr_p, af.lr, generated=False)
            written.append(lr_p)
            entry = {"frame": i, "timestamp_s": round(float(ts), 6), "face": j, "crop": crop_p.name,
                     "lr": lr_p.name, **af.to_dict()}
            rec.extra["faces"].append(entry)
            rec.add_output(crop_p, d1, kind="aligned_face", frame=i, face=j)
            rec.add_output(lr_p, d2, kind="lr_input", frame=i, face=j)
            if af.small or af.lr_interpolated:
                warn(f"frame {i}, face {j}: {af.note}")
        rec.write(record_path)
        written.append(record_path)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    if not args.quiet:
        print(f"{inp}: {len(found)} face(s) in {len(frames) - len(empty)} of {len(frames)} frame(s) -> {out} "
              f"({record_path.name})")
        if empty and len(frames) == 1:
            print("no face was found; draw one by hand with --box X0,Y0,X1,Y1 (and --eyes LX,LY,RX,RY)",
                  file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    d = sub.add_parser("detect", help="find, align and crop the faces of a still or a video",
                       description="Detect every face (MTCNN) in a still or in video frames, align each to the "
                       "128x128 face frame and write the crops, their 16x16 LR inputs and a JSON record "
                       "(boxes, landmarks, frame numbers, timestamps). A video is scanned once per second "
                       "unless --frame or --every says otherwise.")
    d.add_argument("input", metavar="INPUT", help="a still (PNG, JPEG, BMP, TIFF, ...) or a video (MP4, AVI, MKV, ...)")
    fr = d.add_mutually_exclusive_group()
    fr.add_argument("--frame", type=int, metavar="I", help="only frame I (0-based)")
    fr.add_argument("--every", type=int, metavar="N", help="every N-th frame (default: one frame per second)")
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (never the input's folder)")
    d.add_argument("--min-face", type=float, default=12, metavar="PX", help="smallest face side to look for (12)")
    d.add_argument("--min-prob", type=float, default=0.9, help="smallest detection probability kept (0.9)")
    d.add_argument("--thorough", action="store_true",
                   help="always add the tiled 2x upscaled pass (finds faces down to about 8 px; slower)")
    d.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a face drawn by hand (pixels) where detection fails")
    d.add_argument("--eyes", metavar="LX,LY,RX,RY", help="the two eye centres (image left first): exact alignment")
    d.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_detect)
