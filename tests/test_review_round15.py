"""The report's Ensemble part states each member's share of the forecast as the ensemble computes it."""
from __future__ import annotations

import json

from hftraining.eval.report import write_report


def test_the_ensemble_part_states_the_shares_of_weights_whose_sum_overflows(tmp_path):
    """An ensemble.json may hold any finite weights (the loader accepts 1e308 each); the ensemble divides them
    by the largest before summing, so two such members forecast half each. The report summed them first: the sum
    was inf and every member's share read 0."""
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({
        "format_version": 1, "method": "weighted", "weights": [1e308, 1e308],
        "members": ["members/member-0", "members/member-1"], "sources": ["runs/a", "runs/b"],
        "validation_mse": [1e-4, 1e-4]}), encoding="utf-8")
    _, md = write_report(tmp_path / "out", run_dir=ens)
    rows = [line for line in md.read_text(encoding="utf-8").splitlines() if line.startswith("| member-")]
    assert len(rows) == 2
    assert all("| 0.5000 |" in row for row in rows), rows
