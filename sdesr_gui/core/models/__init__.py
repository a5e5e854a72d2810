"""Models: conditional score U-Net, time-dependent attribute classifier, checkpoint I/O.

Qt-free.  See ``score_net`` for the EDM-preconditioned residual denoiser and
``checkpoint`` for the safetensors format with its JSON metadata block.
"""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    KINDS,
    METADATA_KEY,
    CheckpointError,
    build_model,
    file_sha256,
    import_torch_state,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    tensor_sha256,
    training_steps,
)
from .classifier import DEFAULT_ATTRIBUTES, AttributeClassifier, AttributeClassifierConfig
from .layers import (
    Downsample,
    FourierNoiseEmbedding,
    ResBlock,
    SelfAttention,
    Upsample,
    c_noise_from_sigma,
)
from .score_net import ScoreNetConfig, ScoreUNet, as_sigma

__all__ = [
    "AttributeClassifier",
    "AttributeClassifierConfig",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "DEFAULT_ATTRIBUTES",
    "Downsample",
    "FourierNoiseEmbedding",
    "KINDS",
    "METADATA_KEY",
    "ResBlock",
    "ScoreNetConfig",
    "ScoreUNet",
    "SelfAttention",
    "Upsample",
    "as_sigma",
    "build_model",
    "c_noise_from_sigma",
    "file_sha256",
    "import_torch_state",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "tensor_sha256",
    "training_steps",
]
