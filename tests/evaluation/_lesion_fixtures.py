"""Random multi-lesion 3D volumes for comparing lesion matching rules with independent references."""

from __future__ import annotations

import numpy as np


def random_lesion_case(rng: np.random.Generator, shape: tuple[int, int, int] = (24, 24, 24)
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, label)``, bool ``(D, H, W)``: 2-8 box lesions; each predicted (85 %) as a box shrunk by 1 voxel or
    grown by up to 3, half of them shifted by one voxel; then 3 % holes (which split some components) and speckle
    false positives. Lesions and predictions touch or merge at random, so every kind of match occurs."""
    label = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(2, 9)):
        corner, size = rng.integers(0, 20, 3), rng.integers(2, 8, 3)
        label[tuple(slice(a, a + s) for a, s in zip(corner, size, strict=True))] = True
        grow, shift = rng.choice([-1, 0, 0, 1, 3]), rng.integers(-1, 2, 3) * (rng.random() < 0.5)
        if rng.random() < 0.85:
            pred[tuple(slice(max(a + d - grow, 0), max(a + s + d + grow, 0))
                       for a, s, d in zip(corner, size, shift, strict=True))] = True
    pred &= rng.random(shape) > 0.03
    pred |= rng.random(shape) > 0.9995
    return pred, label
