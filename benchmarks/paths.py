"""Where the benchmarks read and write committed results: one folder, `results/` at the repo root, kept apart from
the benchmark code. Every script that writes or reads a committed result takes its path from here, so the scripts
depend on this module rather than on each other (real_pair used to import real_pair_lr_probe for one path)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results"

REAL_PAIR = RESULTS_DIR / "real_pair.jsonl"
REAL_PAIR_PREDICTIONS = RESULTS_DIR / "real_pair_predictions"
REAL_PAIR_LR_PROBE = RESULTS_DIR / "real_pair_lr_probe.json"
TESTBED_CONFIRM = RESULTS_DIR / "testbed_confirm.json"
TESTBED_GRADIENT_PROBE = RESULTS_DIR / "testbed_gradient_probe.json"
TESTBED_SFT_PROBE = RESULTS_DIR / "testbed_premise_sft_probe.jsonl"


def testbed_diagnostics(seed: int) -> Path:
    """The diagnostics probe's committed numbers for one seed."""
    return RESULTS_DIR / f"testbed_diagnostics_seed{seed}.json"
