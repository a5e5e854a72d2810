"""The degradation model: downsample / upsample / quantize / degrade and conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdesr_gui.core import faces


def test_constants() -> None:
    assert faces.FRAME_SIZE == 128 and faces.LR_SIZE == 16
    assert faces.TEMPLATE_LANDMARKS.shape == (5, 2)
    assert faces.TEMPLATE_LANDMARKS[0].tolist() == [50.54, 66.49]
    assert faces.CELEBA_ALIGNED_BOX == (0, 20, 178, 198)


def test_degrade_shape_and_uint8_grid() -> None:
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 128, 128)
    lr = faces.degrade(hr)
    assert lr.shape == (2, 3, 16, 16)
    assert torch.equal(lr * 255, torch.round(lr * 255))
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    assert faces.degrade(hr, size=8).shape == (2, 3, 8, 8)
    # degrade == quantize(downsample)
    assert torch.equal(lr, faces.quantize(faces.downsample(hr)))
    # matches the reference call exactly
    ref = torch.nn.functional.interpolate(hr, size=(16, 16), mode="bicubic", antialias=True,
                                          align_corners=False).clamp(0, 1)
    assert torch.equal(faces.downsample(hr), ref)


def test_downsample_of_constant_is_constant() -> None:
    hr = torch.full((1, 3, 128, 128), 0.37)
    assert torch.allclose(faces.downsample(hr), torch.full((1, 3, 16, 16), 0.37), atol=1e-6)
    assert torch.allclose(faces.upsample(faces.downsample(hr)), hr, atol=1e-6)


def test_upsample_shape_and_range() -> None:
    lr = torch.rand(3, 3, 16, 16)
    up = faces.upsample(lr)
    assert up.shape == (3, 3, 128, 128)
    assert float(up.min()) >= 0 and float(up.max()) <= 1
    assert faces.upsample(lr[0]).shape == (3, 128, 128)  # unbatched keeps its rank


def test_tensor_uint8_round_trip() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    t = faces.to_tensor(img)
    assert t.shape == (1, 3, 20, 30) and t.dtype == torch.float32
    back = faces.to_uint8(t)
    assert len(back) == 1 and back[0].dtype == np.uint8
    assert np.array_equal(back[0], img)
    over = faces.to_uint8(torch.tensor([[[[1.7]], [[-0.2]], [[0.5]]]]))[0]
    assert over.reshape(-1).tolist() == [255, 0, 128]
    batch = faces.frames_to_tensor([img, img])
    assert batch.shape == (2, 3, 20, 30)


def test_celeba_aligned_to_frame() -> None:
    img = Image.new("RGB", (178, 218), (10, 200, 30))
    frame = faces.celeba_aligned_to_frame(img)
    assert frame.size == (128, 128) and frame.mode == "RGB"
    assert np.asarray(frame)[64, 64].tolist() == [10, 200, 30]


def test_rejects_bad_rank() -> None:
    with pytest.raises(ValueError):
        faces.downsample(torch.rand(16, 16))
