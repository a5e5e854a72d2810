"""Render the bundled sample images from scikit-image's public-domain astronaut photo.

resources/sample_face.png : the astronaut's face aligned to the 128x128 face frame (MTCNN + template)
resources/sample_face_lr.png : its 16x16 LR (the model's input)
Run: .venv/bin/python scripts/make_resources.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from sdesr_gui.core import faces

root = Path(__file__).resolve().parents[1] / "resources"
root.mkdir(exist_ok=True)
img = data.astronaut()
face = faces.largest_face(faces.detect_faces(img))
aligned, _ = faces.align_face(img, face.landmarks)
Image.fromarray(aligned).save(root / "sample_face.png", optimize=True)
lr = faces.to_uint8(faces.degrade(faces.to_tensor(aligned)))[0]
Image.fromarray(lr).save(root / "sample_face_lr.png")
print("wrote", root / "sample_face.png", root / "sample_face_lr.png", "prob", round(float(face.prob), 4))
