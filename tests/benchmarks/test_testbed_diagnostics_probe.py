"""benchmarks/privilege_illusion/diagnostics_probe.py --quick: the diagnostics are logged for DOPD and for vanilla OPD
with a privileged teacher (whose sampled-token gradient follows the teacher on every token, by construction)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_probe_writes_both_methods_diagnostics(tmp_path):
    out_json = tmp_path / "diag.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.privilege_illusion.diagnostics_probe", "--quick",
                           "--out", str(tmp_path / "work"), "--json", str(out_json)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert set(result["logs"]) == {"dopd", "vanilla_opd_priv"} and result["steps"] == 2
    for name in ("dopd", "vanilla_opd_priv"):
        first = result["summary"][name]["step1"]
        assert "dopd/all/teacher_rejected_frac" in first and "dopd/HS/priv_logp_gain" in first, name
    assert result["summary"]["vanilla_opd_priv"]["all_steps"]["dopd/all/grad_agrees_teacher_frac"] == 1.0
    assert not (REPO / "results" / "testbed_diagnostics_seed0.json").samefile(out_json)
