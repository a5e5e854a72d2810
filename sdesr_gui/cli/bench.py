"""``sdesr bench``: network and sampler speed on this machine."""

from __future__ import annotations

import json
import statistics
import time

from ..core.models.score_net import ARCHITECTURES
from .common import add_model_args, load_enhancer


def cmd_bench(args) -> int:
    import torch

    from ..core import faces
    from ..core.enhance import Enhancer, SamplerSettings, resolve_device
    from ..core.models import ScoreUNet
    from ..core.presets import SAMPLER_PRESETS
    from ..core.provenance import device_info
    from ..core.sde import VESDE

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_init:
        device = resolve_device(args.device)
        torch.manual_seed(0)
        enh = Enhancer(ScoreUNet(ARCHITECTURES[args.arch]()), VESDE(), device=device,
                       model_info={"name": f"random-init {args.arch} design"})
    else:
        enh = load_enhancer(args, need_classifier=False)
    dev = enh.device
    model = enh.model
    n_params = sum(p.numel() for p in model.parameters())
    lr = torch.rand(1, 3, faces.LR_SIZE, faces.LR_SIZE)
    y = faces.upsample(lr).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # per-NFE latency: one network evaluation at batch 1 (and at batch K)
    def nfe_latency(batch: int) -> float:
        x = torch.randn(batch, 3, 128, 128, device=dev)
        yb = y.expand(batch, -1, -1, -1)
        sig = torch.full((batch,), 1.0, device=dev)
        times = []
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
            for i in range(args.repeats + 3):
                sync()
                t = time.perf_counter()
                model.denoise(x, sig, yb)
                sync()
                if i >= 3:
                    times.append(time.perf_counter() - t)
        return statistics.median(times)

    lat1 = nfe_latency(1)
    t = time.perf_counter()
    for _ in range(args.repeats):
        enh.mean_estimate(lr, mirror=True)
    mean_s = (time.perf_counter() - t) / args.repeats
    rows = []
    fast = SamplerSettings(sampler="fast", samples=1)
    res = enh.run(lr, fast)
    rows.append({"sampler": "fast (DPM-Solver++ 2M, defaults)", "steps": fast.n_steps(), "nfe": res.nfe,
                 "seconds_per_sample": res.seconds, "measured": "full run"})
    mir = SamplerSettings(sampler="fast", samples=1, mirror=True)
    res = enh.run(lr, mir)
    rows.append({"sampler": "fast, mirror-averaged (--mirror)", "steps": mir.n_steps(), "nfe": res.nfe,
                 "seconds_per_sample": res.seconds, "measured": "full run (each evaluation at batch 2)"})
    n_meas = min(args.pc_steps, SAMPLER_PRESETS["pc"].steps)
    meas = SamplerSettings(sampler="pc", steps=n_meas, samples=1)
    r2 = enh.run(lr, meas)
    per_step = r2.seconds / n_meas
    paper = SAMPLER_PRESETS["pc"]  # the SDE-SR paper's setting is the PC preset
    paper_s = per_step * paper.steps
    rows.append({"sampler": f"paper PC (N={paper.steps}, M={paper.corrector_steps})", "steps": paper.steps,
                 "nfe": paper.evaluations(), "seconds_per_sample": paper_s,
                 "measured": f"{n_meas} steps timed, extrapolated"})
    for r in rows:
        r["vs_paper_time"] = r["seconds_per_sample"] / paper_s
    report = {"device": device_info(str(dev)), "model": enh.model_info.get("name"), "parameters": n_params,
              "threads": torch.get_num_threads(), "nfe_latency_ms_batch1": lat1 * 1000,
              "mean_estimate_ms": mean_s * 1000, "samplers": rows}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    d = report["device"]
    what = d.get("cuda_device") or f"{d.get('cpu')}, {d.get('cpu_count')} cores"
    print(f"device: {d.get('device')} ({what}), torch threads {report['threads']}")
    print(f"model: {report['model']} ({n_params / 1e6:.2f} M parameters)")
    print(f"one network evaluation (batch 1, 128x128): {lat1 * 1000:.1f} ms")
    print(f"mean estimate (mirror-averaged: the LR and its mirror image in one batch of 2): {mean_s * 1000:.1f} ms")
    print(f"{'sampler':38s} {'NFE':>6s} {'s/sample':>10s} {'x paper':>8s}  how")
    for r in rows:
        print(f"{r['sampler']:38s} {r['nfe']:6d} {r['seconds_per_sample']:10.2f} {r['vs_paper_time']:8.4f}  "
              f"{r['measured']}")
    return 0


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    b = sub.add_parser("bench", help="measure network and sampler speed on this machine")
    add_model_args(b)
    b.add_argument("--random-init", action="store_true", help="benchmark an untrained network of --arch")
    b.add_argument("--arch", choices=list(ARCHITECTURES), default="v2",
                   help="with --random-init: the network design (v2: pixel-unshuffle + wide U-Net)")
    b.add_argument("--repeats", type=int, default=20, help="timed network evaluations (20)")
    b.add_argument("--pc-steps", type=int, default=30, help="PC steps to time before extrapolating (30)")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
