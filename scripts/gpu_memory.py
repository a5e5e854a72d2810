#!/usr/bin/env python
"""Peak CUDA memory of `sdesr enhance` on the bundled sample face, for K = 1, 4, 8, 16 samples.

    python scripts/gpu_memory.py gpu_memory.json

Each run is the CLI's own (`enhance --device cuda`: fast sampler, half precision, the shipped
model); the peak is PyTorch's allocator (`max_memory_allocated` / `max_memory_reserved`), so the
CUDA context itself (a few hundred MiB, driver dependent) comes on top. Writes one JSON file.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sdesr_gui.cli import main as cli  # noqa: E402


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python scripts/gpu_memory.py OUT.json", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_memory.py measures CUDA memory, and this machine has no CUDA device.", file=sys.stderr)
        return 2
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": {}}
    for k in (1, 4, 8, 16):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as d:
            rc = cli(["enhance", str(ROOT / "resources" / "sample_face.png"), "--out", d, "--samples", str(k),
                      "--device", "cuda", "--overwrite", "--quiet"])
        res["runs"][k] = {"rc": rc, "peak_allocated_MiB": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1),
                          "peak_reserved_MiB": round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)}
        print(k, res["runs"][k], flush=True)
    Path(sys.argv[1]).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
