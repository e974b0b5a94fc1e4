#!/usr/bin/env python
"""Predict NIfTI masks, in exactly each input's space, with a trained checkpoint.

    python infer.py --checkpoint RUN/best.ckpt --input FILE|DIR|dataset.json --output DIR
                    [--probabilities] [--overwrite] [--tta]

Also installed as ``seg-infer``. The work happens in :func:`seg.predict.predict_files`.
"""

from seg.cli import infer_main

if __name__ == "__main__":
    raise SystemExit(infer_main())
