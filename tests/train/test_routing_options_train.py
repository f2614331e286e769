"""`routing_statistic` and `teacher_veto` through the trainer: the step's statistics (computed before the loss,
`routing_scope: step`) use the configured statistic, and the veto empties HS of rejected tokens."""

import pytest

from .test_step_scope import STATS, _one_step


def test_step_statistics_use_the_configured_statistic(tmp_path):
    # one micro-batch on one rank: the step's statistics are the micro-batch's own, whichever code computes them
    step = _one_step(tmp_path, "step_top1", 4, 1, routing_statistic="top1")
    own = _one_step(tmp_path, "mb_top1", 4, 1, routing_statistic="top1", routing_scope="micro_batch")
    sampled = _one_step(tmp_path, "step_sampled", 4, 1)
    for key in STATS:
        assert step[key] == pytest.approx(own[key], rel=1e-5), key
    assert step["dopd/threshold/q_s"] > sampled["dopd/threshold/q_s"]  # top-1 probabilities, not the sampled ones


def test_teacher_veto_leaves_no_rejected_token_in_hs(tmp_path):
    log = _one_step(tmp_path, "veto", 4, 1, teacher_veto=True)
    assert log.get("dopd/HS/teacher_rejected_frac", 0.0) == 0.0
    assert log["dopd/all/teacher_rejected_frac"] > 0  # there were rejected tokens to route
