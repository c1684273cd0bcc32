"""``python -m hftraining ...`` (what ``torchrun -m hftraining`` runs)."""

from hftraining.cli import main

raise SystemExit(main())
