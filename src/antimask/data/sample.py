"""The embedded sample: real face photos that ship inside installed packages, so the main job runs
with nothing to download.

Two portraits (scikit-image's ``astronaut``, Eileen Collins; matplotlib's ``grace_hopper.jpg``) are
expanded into seeded variants (flip, small rotation/scale/shift, colour jitter with albumentations).
Each variant counts as its own identity: the sample demonstrates the pipeline end to end; it is not a
data set to judge the method on (train and test hold the same two people).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DEFAULT_FOLDER = Path("runs/sample_photos")
VARIANTS_PER_PORTRAIT = 24


def portraits() -> dict[str, np.ndarray]:
    """The packaged portraits as RGB uint8 arrays, cropped to the head and shoulders."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    astronaut = skimage.data.astronaut()[:300, 100:400]
    return {"astronaut": astronaut, "grace_hopper": hopper}


def write_sample(folder: Optional[str | Path] = None, variants: int = VARIANTS_PER_PORTRAIT, seed: int = 0) -> Path:
    """Write the sample photos to ``folder`` (once; existing complete samples are reused)."""
    import albumentations as A
    from PIL import Image

    folder = Path(folder or DEFAULT_FOLDER)
    stamp = folder / f".complete-{variants}-{seed}"
    if stamp.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    jitter = A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), rotate=(-6, 6), translate_percent=(-0.04, 0.04), border_mode=1, p=1.0),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=1.0),
    ], seed=seed)
    for name, image in portraits().items():
        Image.fromarray(image).save(folder / f"{name}_original.png")
        for i in range(variants - 1):
            Image.fromarray(jitter(image=image)["image"]).save(folder / f"{name}_{i:03d}.png")
    stamp.touch()
    return folder
