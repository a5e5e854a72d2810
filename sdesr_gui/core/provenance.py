"""Provenance: hashes, atomic writes, version/device info and run records.

Inputs are evidence: outputs are written atomically (temp file in the same folder, then
``os.replace``) so nothing half-written is ever left behind, and every output carries a
record of what produced it. This module is Qt-free.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "GENERATED_NOTICE",
    "DERIVED_NOTICE",
    "PNG_SOFTWARE",
    "sha256_file",
    "sha256_bytes",
    "versions",
    "device_info",
    "atomic_write_bytes",
    "atomic_write_text",
    "encode_png",
    "atomic_save_png",
    "to_json",
    "write_json_atomic",
    "is_inside",
    "utc_now_iso",
    "RunRecord",
    "make_run_record",
]

PathLike = Union[str, os.PathLike]

#: Label attached to every generated image and run record.
GENERATED_NOTICE = (
    "Generated image (AI super-resolution): an investigative lead, not an identification."
)

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's contents (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, second precision."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def _package_version() -> str:
    try:
        import sdesr_gui

        return str(getattr(sdesr_gui, "__version__", "0.1.0"))
    except Exception:  # pragma: no cover - package always importable in practice
        return "0.1.0"


def versions() -> dict[str, str]:
    """Versions of Python, this package and the libraries that shape the numbers."""
    out: dict[str, str] = {
        "python": platform.python_version(),
        "sdesr_gui": _package_version(),
        "platform": platform.platform(),
    }
    for key, mod, attr in (
        ("torch", "torch", "__version__"),
        ("numpy", "numpy", "__version__"),
        ("pillow", "PIL", "__version__"),
        ("opencv", "cv2", "__version__"),
    ):
        try:
            module = __import__(mod)
            out[key] = str(getattr(module, attr, "unknown"))
        except Exception:
            out[key] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_info(device: str = "cpu") -> dict[str, Any]:
    """Describe the compute device: CPU model and threads; GPU name/capability for CUDA."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if str(device).startswith("cuda") and torch.cuda.is_available():
            dev = torch.device(device)
            idx = dev.index if dev.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(idx)
            info["cuda_device"] = props.name
            info["cuda_capability"] = f"{props.major}.{props.minor}"
            info["cuda_memory_bytes"] = int(props.total_memory)
            info["cuda_version"] = torch.version.cuda
        elif str(device).startswith("mps"):
            info["mps_available"] = bool(
                getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
            )
    except Exception:  # pragma: no cover - torch missing or broken driver
        pass
    return info


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    The parent folder must exist. On any error the temp file is removed and the previous
    content of ``path`` (if any) is untouched.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


#: ``Software`` text chunk of every PNG this application writes with a label.
PNG_SOFTWARE = "SDE-SR Studio"

#: ``Comment`` text chunk of an image derived from the input without the model (crop, LR,
#: bicubic interpolation): the counterpart of :data:`GENERATED_NOTICE`.
DERIVED_NOTICE = "Derived from the input by cropping/resampling; not generated."


def encode_png(image: np.ndarray, *, generated: Optional[bool] = None) -> bytes:
    """Encode an HxWx3 (or HxW / HxWx4) uint8 array as PNG bytes, deterministically.

    The one PNG encoder of the application. ``generated`` labels the image in PNG text chunks
    (``Software`` and ``Comment``): ``True`` -> :data:`GENERATED_NOTICE` (a model's output),
    ``False`` -> :data:`DERIVED_NOTICE` (cropped/resampled from the input), ``None`` -> no
    text chunks (training grids, prepared datasets). No timestamps and a fixed compression
    level: the same array and label always give the same bytes.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    img = Image.fromarray(np.ascontiguousarray(arr))
    info = None
    if generated is not None:
        info = PngInfo()
        info.add_text("Software", PNG_SOFTWARE)
        info.add_text("Comment", GENERATED_NOTICE if generated else DERIVED_NOTICE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, optimize=False, compress_level=6)
    return buf.getvalue()


def atomic_save_png(path: PathLike, image: np.ndarray, *, generated: Optional[bool] = None) -> str:
    """Encode a uint8 image (:func:`encode_png`) and write it atomically; return the hex SHA-256
    of the bytes written.

    The one writer of image outputs, for the CLI and the GUI export alike: a model's output
    passes ``generated=True`` so the file itself says it is generated; an image cut or
    resampled from the input passes ``generated=False``.
    """
    data = encode_png(image, generated=generated)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, indent 2, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, default=_json_default,
                      ensure_ascii=False) + "\n"


def write_json_atomic(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2) atomically."""
    return atomic_write_text(path, to_json(obj))


def is_inside(child: PathLike, parent: PathLike) -> bool:
    """True if ``child`` is ``parent`` or lies under it (both resolved, symlinks followed)."""
    c = Path(child).expanduser().resolve()
    p = Path(parent).expanduser().resolve()
    return c == p or p in c.parents


@dataclasses.dataclass
class RunRecord:
    """Provenance of one job: what went in, what settings were used, what came out.

    Written next to the outputs as JSON (:meth:`write`). Free-form sections (``sampler``,
    ``attributes``, ``frame``, ...) are plain dicts so every job kind can use the same record.
    """

    kind: str
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    outputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampler: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: Optional[int] = None
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    frame: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=versions)
    device: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_utc: str = dataclasses.field(default_factory=utc_now_iso)
    notice: str = GENERATED_NOTICE

    def add_input(self, path: PathLike, sha256: Optional[str] = None, **info: Any) -> None:
        """Record an input file (hashing it unless ``sha256`` is given)."""
        entry = {"path": str(path), "sha256": sha256 or sha256_file(path)}
        entry.update(info)
        self.inputs.append(entry)

    def add_output(self, path: PathLike, sha256: str, **info: Any) -> None:
        """Record an output file with the hash returned by the atomic writer."""
        entry = {"path": str(path), "sha256": sha256}
        entry.update(info)
        self.outputs.append(entry)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-ready)."""
        return dataclasses.asdict(self)

    def write(self, path: PathLike) -> Path:
        """Write the record as JSON atomically."""
        return write_json_atomic(path, self.to_dict())


def make_run_record(
    kind: str,
    *,
    inputs: Sequence[PathLike] = (),
    device: str = "cpu",
    seed: Optional[int] = None,
    model: Optional[Mapping[str, Any]] = None,
    sampler: Optional[Mapping[str, Any]] = None,
    attributes: Optional[Mapping[str, Any]] = None,
    frame: Optional[Mapping[str, Any]] = None,
    **extra: Any,
) -> RunRecord:
    """Build a :class:`RunRecord`, hashing each input file and filling versions/device."""
    rec = RunRecord(
        kind=kind,
        seed=seed,
        model=dict(model or {}),
        sampler=dict(sampler or {}),
        attributes=dict(attributes or {}),
        frame=dict(frame or {}),
        device=device_info(device),
        extra=dict(extra),
    )
    for p in inputs:
        rec.add_input(p)
    return rec
