"""Planning: a training config from the dataset's fingerprint (``seg-plan``), by nnU-Net's rules."""
