"""benchmarks/real_pair_lr_probe.py on tiny models: the trainer's chunked loss has the gradient of a plain
full-logits reference for the sampled-token reverse KL, and a small step along -grad lowers the full reverse KL at
the sampled positions while +grad raises it. Checks the probe and the objective's sign, not the real pair's lr."""

import json

from benchmarks import real_pair_lr_probe


def test_quick_probe_gradient_matches_reference_and_descends(tmp_path):
    out = tmp_path / "probe.json"
    assert real_pair_lr_probe.main(["--quick", "--max-new-tokens", "8", "--norms", "0.01", "--lrs", "1e-6",
                                    "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert abs(res["grad_cosine"] - 1.0) < 1e-5
    assert abs(res["grad_norm_trainer"] / res["grad_norm_reference"] - 1.0) < 1e-5
    descent, ascent = res["direction"]
    assert (descent["step"], ascent["step"]) == ("descent", "ascent")
    assert descent["kl_full"] < res["kl_full_before"] < ascent["kl_full"]
    assert [r["lr"] for r in res["adam_first_step"]] == [1e-6]
    assert res["adam_first_step"][0]["l2"] == 1e-6 * res["trained_parameters"] ** 0.5
