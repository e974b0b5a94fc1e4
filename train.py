#!/usr/bin/env python
"""Train a lesion segmenter.

    python train.py --config configs/demo.yaml [--dataset PATH] [--output RUN_DIR] [--max-epochs N]
                    [--max-minutes M] [--seed S] [--resume] [--check-data] [--model.gamma 1.0 ...]

Also installed as ``seg-train``. The work happens in :func:`seg.cli.train`.
"""

from seg.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
