"""Checkpoint I/O: ``.safetensors`` weights with a JSON metadata block.

Nothing here ever unpickles a file: our own weights are safetensors, and a
foreign ``.pth`` is read with ``torch.load(weights_only=True)`` only.

The safetensors header metadata holds a single key ``"sdesr"`` whose value is a
JSON object::

    {"format": "sdesr-gui/1", "kind": "score" | "classifier", "config": {...},
     "tensor_sha256": "<hex>", "stored_dtype": "float32", ...caller metadata...}

``tensor_sha256`` is a hash over the tensors as stored (see :func:`tensor_sha256`).

Weights may be stored as int8 (``quantize="int8"``): each convolution / linear weight
``W`` of shape ``[out, ...]`` becomes an int8 tensor ``q`` under its own name and a
float32 scale ``s`` of shape ``[out]`` under ``name + QUANT_SCALE_SUFFIX``, with
``W ~= q * s`` (symmetric, per output channel, ``s = max|W_out| / 127``).  Loading
dequantises; biases, norms and buffers keep the file's float dtype.  The metadata's
``quantization`` entry says so.  This halves a file against fp16 with a rounding error
of at most half a step per weight; the model card measures what it costs.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..provenance import atomic_write_bytes
from .classifier import AttributeClassifier, AttributeClassifierConfig
from .score_net import ScoreNetConfig, ScoreUNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "METADATA_KEY",
    "KINDS",
    "CheckpointError",
    "save_checkpoint",
    "read_metadata",
    "load_checkpoint",
    "build_model",
    "tensor_sha256",
    "file_sha256",
    "import_torch_state",
    "convert_checkpoint",
    "update_metadata",
    "QUANT_SCALE_SUFFIX",
]

CHECKPOINT_FORMAT = "sdesr-gui/1"
METADATA_KEY = "sdesr"
KINDS = ("score", "classifier")
QUANT_SCALE_SUFFIX = "::int8_scale"
QUANTIZE_SCHEMES = ("int8",)

PathLike = str | os.PathLike


from ..errors import CheckpointError  # noqa: E402  (re-exported)


# --------------------------------------------------------------------------- hashing
def tensor_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Deterministic sha256 over named tensors.

    Keys are visited in sorted order; for each, the key name, dtype, shape and
    the raw (little-endian, C-contiguous) bytes are hashed, each field length-
    prefixed so that no two different tensor sets hash the same way.
    """
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(struct.pack("<Q", len(b)))
        h.update(b)

    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        put(name.encode("utf-8"))
        put(str(t.dtype).removeprefix("torch.").encode("ascii"))
        put(json.dumps(list(t.shape)).encode("ascii"))
        put(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: PathLike) -> str:
    """:func:`provenance.sha256_file` of a checkpoint, failing as a :class:`CheckpointError`."""
    from ..provenance import sha256_file

    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"The file {os.fspath(path)!s} does not exist.") from None
    except OSError as exc:
        raise CheckpointError(f"The file {os.fspath(path)!s} could not be read ({exc.strerror or exc}).") from exc


# --------------------------------------------------------------------------- models
def build_model(kind: str, config: Mapping[str, Any]) -> nn.Module:
    """Build a fresh model of ``kind`` ("score" or "classifier") from a config dict."""
    try:
        if kind == "score":
            return ScoreUNet(ScoreNetConfig.from_dict(dict(config)))
        if kind == "classifier":
            return AttributeClassifier(AttributeClassifierConfig.from_dict(dict(config)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"The {kind} model config is invalid ({exc}).") from exc
    raise CheckpointError(f"Unknown model kind {kind!r} (expected one of {', '.join(KINDS)}).")


def _infer_kind(model: nn.Module) -> str:
    if isinstance(model, ScoreUNet):
        return "score"
    if isinstance(model, AttributeClassifier):
        return "classifier"
    raise ValueError("cannot infer the checkpoint kind of this model; pass kind=.")


# --------------------------------------------------------------------------- int8
def _quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: returns (q int8, scale float32 [out])."""
    w32 = w.detach().to(torch.float32)
    flat = w32.reshape(w32.shape[0], -1)
    scale = flat.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w32.shape).contiguous(), scale.contiguous()


def _dequantize(tensors: dict[str, torch.Tensor], p: Path) -> dict[str, torch.Tensor]:
    """Float32 state dict from stored tensors, int8 weights times their scales."""
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if k.endswith(QUANT_SCALE_SUFFIX):
            continue
        if v.dtype == torch.int8:
            scale = tensors.get(k + QUANT_SCALE_SUFFIX)
            if scale is None or scale.ndim != 1 or v.ndim < 1 or scale.shape[0] != v.shape[0]:
                raise CheckpointError(f"The int8 weight {k} in {p.name} has no matching scale.")
            v = v.to(torch.float32) * scale.to(torch.float32).reshape(-1, *([1] * (v.ndim - 1)))
        elif v.is_floating_point():
            v = v.to(torch.float32)
        out[k] = v
    return out


# --------------------------------------------------------------------------- saving
def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    kind: str | None = None,
    config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Write ``model``'s state dict to ``path`` as safetensors, atomically.

    Args:
        path: destination ``.safetensors`` file (its folder must exist).
        model: the model; its ``state_dict()`` is saved (buffers included).
        kind: "score" or "classifier" (inferred from the model class if omitted).
        config: architecture config dict (``model.config.to_dict()`` if omitted).
        metadata: extra JSON-serialisable entries (sde, data_range, metrics, ...);
            the reserved keys format/kind/config/tensor_sha256/stored_dtype win.
        dtype: if given (e.g. ``torch.float16``), floating *parameters* are cast to
            it; buffers (e.g. Fourier frequencies) stay at full precision.
        quantize: ``"int8"`` stores every convolution / linear weight (a parameter with
            two or more dimensions) as int8 with a per-output-channel scale (see the
            module docstring); other parameters follow ``dtype``.

    Returns:
        The metadata dict that was written.
    """
    from safetensors.torch import save as st_save

    kind = kind or _infer_kind(model)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if config is None:
        cfg = getattr(model, "config", None)
        if cfg is None or not hasattr(cfg, "to_dict"):
            raise ValueError("config is required for a model without a .config.to_dict().")
        config = cfg.to_dict()
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}.")
    if quantize is not None and quantize not in QUANTIZE_SCHEMES:
        raise ValueError(f"quantize must be one of {QUANTIZE_SCHEMES} or None, got {quantize!r}.")

    buffer_names = {name for name, _ in model.named_buffers()}
    tensors: dict[str, torch.Tensor] = {}
    n_quantized = 0
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if name.endswith(QUANT_SCALE_SUFFIX):
            raise ValueError(f"the parameter name {name!r} ends with the reserved suffix {QUANT_SCALE_SUFFIX!r}.")
        if quantize and t.is_floating_point() and name not in buffer_names and t.ndim >= 2:
            tensors[name], tensors[name + QUANT_SCALE_SUFFIX] = _quantize_int8(t)
            n_quantized += 1
            continue
        if dtype is not None and t.is_floating_point() and name not in buffer_names:
            t = t.to(dtype)
        tensors[name] = t.contiguous().clone()  # no shared storage, own memory

    stored = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    meta: dict[str, Any] = dict(metadata or {})
    meta.update(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": kind,
            "config": dict(config),
            "tensor_sha256": tensor_sha256(tensors),
            "stored_dtype": stored[0] if len(stored) == 1 else stored,
        }
    )
    meta.pop("quantization", None)
    if quantize:
        meta["quantization"] = {"scheme": "int8, symmetric, per output channel",
                                "tensors": n_quantized, "scale_suffix": QUANT_SCALE_SUFFIX}
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc

    data = st_save(tensors, metadata={METADATA_KEY: meta_json})
    dest = Path(path)
    try:
        atomic_write_bytes(dest, data)
    except OSError as exc:
        raise CheckpointError(f"The checkpoint could not be written to {dest} ({exc.strerror or exc}).") from exc
    return json.loads(meta_json)


# --------------------------------------------------------------------------- loading
def _check_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"The checkpoint file {p} does not exist.")
    if not p.is_file():
        raise CheckpointError(f"The checkpoint path {p} is not a file.")
    return p


def _parse_meta(raw: Mapping[str, str] | None, p: Path) -> dict[str, Any]:
    if not raw or METADATA_KEY not in raw:
        raise CheckpointError(f"The file {p.name} has no sdesr-gui metadata block, so it is not an SDE-SR Studio checkpoint.")
    try:
        meta = json.loads(raw[METADATA_KEY])
    except (TypeError, ValueError):
        raise CheckpointError(f"The metadata block of {p.name} is not valid JSON.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"The metadata block of {p.name} is not a JSON object.")
    fmt = meta.get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(f"The checkpoint {p.name} has format {fmt!r}, but this version reads {CHECKPOINT_FORMAT!r}.")
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"The checkpoint {p.name} has unknown model kind {meta.get('kind')!r}.")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"The checkpoint {p.name} has no architecture config.")
    if not isinstance(meta.get("tensor_sha256"), str):
        raise CheckpointError(f"The checkpoint {p.name} has no tensor hash to verify it against.")
    return meta


def _open(p: Path):
    from safetensors import safe_open

    try:
        return safe_open(os.fspath(p), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types, OSError, ...
        raise CheckpointError(f"The file {p.name} is not a readable safetensors file.") from exc


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Parse and validate the checkpoint's JSON metadata without loading tensors."""
    p = _check_file(path)
    with _open(p) as f:
        try:
            raw = f.metadata()
        except Exception as exc:
            raise CheckpointError(f"The header of {p.name} could not be read.") from exc
    return _parse_meta(raw, p)


def load_checkpoint(path: PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Validates the format, verifies ``tensor_sha256`` against the tensors as
    stored (before casting), builds the model from its config, loads the
    weights as float32, moves it to ``device`` and puts it in eval mode.  The
    metadata is attached as ``model.meta``.

    Raises:
        CheckpointError: for any problem, with a one-sentence message.
    """
    p = _check_file(path)
    with _open(p) as f:
        try:
            meta = _parse_meta(f.metadata(), p)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"The tensors in {p.name} could not be read; the file may be truncated or corrupt.") from exc

    if tensor_sha256(tensors) != meta["tensor_sha256"]:
        raise CheckpointError(f"The weights in {p.name} do not match their recorded hash; the file is corrupt or was modified.")

    model = build_model(meta["kind"], meta["config"])
    state = _dequantize(tensors, p)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"The weights in {p.name} do not fit the architecture in its config.") from exc
    try:
        model.to(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"The model could not be moved to device {device!s}.") from exc
    model.eval()
    model.meta = meta
    return model, meta


#: metadata keys that describe a file's tensors and storage, written by ``save_checkpoint`` itself:
#: a file re-made from another one (re-stored, averaged) must not carry them over
STORAGE_KEYS = ("format", "kind", "config", "tensor_sha256", "stored_dtype", "quantization")


def convert_checkpoint(src: PathLike, dst: PathLike, *, dtype: torch.dtype | None = torch.float16,
                       quantize: str | None = None) -> dict[str, Any]:
    """Re-store the checkpoint ``src`` as ``dst`` with another storage (fp16, int8, ...).

    The metadata is kept; ``converted_from`` records the source file's name, sha256 and
    storage so that a re-stored file can be traced to the one it was made from.
    """
    model, meta = load_checkpoint(src)
    src_p = Path(src)
    keep = {k: v for k, v in meta.items() if k not in STORAGE_KEYS}
    keep["converted_from"] = {"file": src_p.name, "sha256": file_sha256(src_p),
                              "tensor_sha256": meta["tensor_sha256"], "stored_dtype": meta.get("stored_dtype"),
                              "quantization": meta.get("quantization")}
    return save_checkpoint(dst, model, kind=meta["kind"], config=meta["config"], metadata=keep,
                           dtype=dtype, quantize=quantize)


# --------------------------------------------------------------------------- foreign
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "ema", "net", "params")


def update_metadata(src: PathLike, dst: PathLike, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the checkpoint ``src`` to ``dst`` (atomically; ``dst`` may be ``src``) with
    ``updates`` merged into its metadata.  The tensors are copied byte for byte, so their
    sha256 still holds; the keys that describe them (:data:`STORAGE_KEYS`) cannot be changed
    this way."""
    from safetensors.torch import save as st_save

    p = _check_file(src)
    reserved = set(STORAGE_KEYS)
    bad = sorted(set(updates) & reserved)
    if bad:
        raise ValueError(f"these metadata keys describe the stored tensors and cannot be updated: {', '.join(bad)}")
    with _open(p) as f:
        meta = _parse_meta(f.metadata(), p)
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if tensor_sha256(tensors) != meta["tensor_sha256"]:
        raise CheckpointError(f"The tensors of {p.name} do not match their recorded hash; the file is damaged.")
    meta.update(dict(updates))
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    dest = Path(dst)
    try:
        atomic_write_bytes(dest, st_save(tensors, metadata={METADATA_KEY: meta_json}))
    except OSError as exc:
        raise CheckpointError(f"The checkpoint could not be written to {dest} ({exc.strerror or exc}).") from exc
    return json.loads(meta_json)


def import_torch_state(path_pth: PathLike) -> dict[str, torch.Tensor]:
    """Read a foreign PyTorch ``.pth`` state dict safely (``weights_only=True``).

    Unwraps common containers (``{"state_dict": ...}``, ``{"model": ...}``, ...)
    and strips a ``module.`` prefix left by DataParallel.  Returns name -> tensor.
    """
    p = _check_file(path_pth)
    try:
        obj = torch.load(os.fspath(p), weights_only=True, map_location="cpu")
    except Exception as exc:  # UnpicklingError for disallowed objects, zip errors, ...
        raise CheckpointError(f"The file {p.name} is not a plain PyTorch weights file that can be read safely.") from exc

    def is_state(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    state: Any = obj
    if not is_state(state) and isinstance(state, dict):
        for key in _WRAPPER_KEYS:
            if is_state(state.get(key)):
                state = state[key]
                break
    if not is_state(state):
        raise CheckpointError(f"The file {p.name} does not contain a state dict of tensors.")
    state = {str(k): v for k, v in state.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def training_steps(meta: Mapping[str, Any]) -> list[int]:
    """The training steps behind a checkpoint, oldest stage first: ``[4062, 3000]`` for weights
    trained 3,000 steps after a warm start from a 4,062-step run (read from ``training`` and
    its ``init`` lineage); ``[]`` when the metadata says nothing."""
    stages: list[int] = []
    tr = meta.get("training") if isinstance(meta, Mapping) else None
    while isinstance(tr, Mapping) and len(stages) < 32:
        if isinstance(tr.get("steps"), (int, float)):
            stages.append(int(tr["steps"]))
        init = tr.get("init")
        tr = init.get("training") if isinstance(init, Mapping) else None
    return stages[::-1]
