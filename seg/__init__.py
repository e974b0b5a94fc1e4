"""seg: small-lesion segmentation with focal and Dice losses.

The package follows the data's path: ``io`` (NIfTI read/write) -> ``data`` (datasets, transforms,
synthetic data) -> ``losses`` / ``alpha`` / ``networks`` / ``module`` (learning) -> ``inference``
(sliding-window prediction) -> ``metrics`` / ``compare`` (judging).
"""

from __future__ import annotations

__version__ = "0.1.0"
