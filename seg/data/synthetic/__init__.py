"""Synthetic sparse-lesion datasets in the MSD layout, seeded and deterministic.

``make_dataset(out_dir)`` writes ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/`` (test labels kept,
same file names, for evaluation) and, last, ``dataset.json``. Command line (:mod:`seg.data.synthetic.cli`)::

    python -m seg.data.synthetic OUT --cases 24 --test-cases 8 [--dims 2] [--preview montage.png]
    python -m seg.data.synthetic OUT --lesion-volume 16 1.3 --lesion-volume-range 3 3000   # the default sizes
    python -m seg.data.synthetic OUT --lesion-sizes radius --lesion-radius 1.5 8 --foreground-fraction 0.003

Lesion sizes (``lesion_sizes``, details in :mod:`seg.data.synthetic.sizes`):

- ``"realistic"`` (the default): each lesion's label volume in voxels is log-normal (median 16 voxels,
  sigma 1.3 of ln V, truncated to 3-3000 voxels: about 65 % of lesions under 30 voxels, median about 19,
  1.3 % over 300), as in public MS and WMH masks, with 2-15 lesions in a non-empty case; the lesion's size
  in mm follows from its volume and the spacing, so it stays round in millimetres on anisotropic grids.
  No lesion-voxel fraction is imposed: it follows from the sizes (about 0.16 % at the default shape).
- ``"radius"`` (earlier versions' model): radii span ``lesion_radius`` (default 1.5-8 mm in 3D, 1-6 mm in
  2D), 1-6 lesions per case; with ``foreground_fraction`` the radius distribution is skewed
  (``r = lo * (hi / lo) ** (u ** k)``, ``u`` uniform, ``k`` found by bisection) so the fraction is met over
  the whole dataset (train + test); without it radii are log-uniform (``k = 1``).

Left at None, ``lesion_sizes`` is ``"radius"`` when ``lesion_radius`` or ``foreground_fraction`` is given (so
earlier calls keep their meaning), else ``"realistic"``; an option of the other model raises. Each lesion's
label is grown to its planned voxel count (one connected component, full connectivity, see
:mod:`seg.data.synthetic.lesions`), so the written labels have the planned distribution;
``dataset.json["stats"]`` reports it as measured on the written labels (components, size quartiles, shares
under 30 and over 300 voxels) with the achieved lesion-voxel fraction.

What makes the phantoms realistic enough that the loss matters (details in :mod:`seg.data.synthetic.phantoms`):

- an ellipsoidal "head" with a wavy edge in a box of exact zeros (air), about a third of the box, so
  cropping to the foreground and normalising over non-zero voxels matter, as for skull-stripped brain MR;
- three nested tissue classes (CSF-, GM-, WM-like) from thresholded smooth noise, with partial-volume
  transitions, plus fine correlated texture noise; a smooth multiplicative bias field (exp of a random
  quadratic) and an arbitrary per-case scanner gain (600-1400);
- lesions as irregular star-shaped blobs (random ellipsoid axes and orientation, boundary perturbed by
  random waves), round in millimetres (not in voxels), centred in WM-like tissue, with a 1 mm soft
  edge (partial volume) whose 0.5 level is the label's boundary. A lesion replaces the tissue by the WM
  level plus ``contrast`` texture stds (default 4-6), while GM-like tissue sits 2 stds above WM: contrast
  is moderate and intensity alone does not find lesions;
- unlabelled distractors as bright as lesions: thin tortuous tubes (vessel-like, 0.5-1 mm radius) and
  lesion-like blobs on the head boundary; lesions keep a gap from them and from each other, so every
  lesion is its own connected component;
- exactly ``round(empty_fraction * cases)`` lesion-free training cases (and likewise for test), which
  still contain distractors;
- non-identity affines: the given (anisotropic) spacing, LPS orientation (first two axes flipped), a
  per-case random origin and a small oblique rotation about the third axis; label and image share the
  affine exactly (qform and sform, code 1 = scanner).

Files: images float32, labels uint8 in {0, 1}. 3D volumes are ``(H, W, D)``; 2D images are written as 2D
NIfTI arrays ``(H, W)`` (no singleton third axis). With ``channels=2`` every channel is its own file
(``case_000_0000.nii.gz`` FLAIR-like, ``case_000_0001.nii.gz`` T1-like, in which lesions are dark and
distractors bright), listed in dataset.json as ``"image": [ch0, ch1]`` (test entries are lists too).
"""

from __future__ import annotations

from seg.data.synthetic.cli import main
from seg.data.synthetic.dataset import make_dataset
from seg.data.synthetic.files import preview
from seg.data.synthetic.sizes import LESION_SIZES

__all__ = ["LESION_SIZES", "make_dataset", "preview", "main"]
