"""ETT long-horizon benchmark (PAPER_TABLES.md protocol) beside the closed-form linear map and the
published PatchTST/DLinear/iTransformer figures: ``hftraining bench ett`` as a script.

    nice -n 10 .venv/bin/python benchmarks/ett.py --data ../shared/data/ett --dataset ETTh1 --horizon 96 \
        --model patchtst --out runs/ett_etth1_96.json

Every option: ``hftraining bench ett --help``.
"""

import sys

from hftraining.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "ett", *sys.argv[1:]]))
