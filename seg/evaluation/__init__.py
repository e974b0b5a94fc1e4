"""Evaluation: voxel and lesion-wise metrics, calibration, ``seg-evaluate`` over folders, and figures."""
