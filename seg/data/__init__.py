"""Datasets: discovery of MSD / nnU-Net / folder layouts (``layouts``), validation (``check``), synthetic data,
MONAI transforms and the LightningDataModule."""
