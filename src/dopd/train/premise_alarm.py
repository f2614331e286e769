"""DOPD's premises read from the logged diagnostics, and the in-run alarm that says when they fail.

DOPD routes a token to the privileged student (HS, LL under the paper's table) on the premise that seeing p makes
the student better on it. Two readings of the objective's diagnostics (`dopd/<R>/<stat>`, docs/objective.md,
"Diagnostics") say when that premise fails:

- `priv_logp_gain <= 0` over all tokens: p does not raise the privileged student's log-probability of the sampled
  tokens (the privileged student is no better informed than the student itself);
- more than half of the tokens the teacher rejects are routed to a target that is not the teacher (the privileged
  student, or no term): the loss then keeps what the teacher says is wrong.

`premise_values` turns records of those keys into the numbers (used by `dopd-cli probe` and by the alarm);
`PremiseAlarmCallback` prints ONE warning line after `premise_check_steps` optimizer steps when a premise fails.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Optional, Sequence

from transformers import TrainerCallback

from dopd.distill.routing import REGIMES

logger = logging.getLogger(__name__)

DOCS = "docs/before_you_train.md"
TOKEN_STATS = ("teacher_rejected_frac", "priv_logp_gain")


def teacher_regimes(table: Mapping[str, Sequence[Any]]) -> set[str]:
    """The regimes whose tokens have a term with the teacher as target."""
    return {regime for regime in REGIMES if any(t.target == "teacher" for t in table.get(regime, ()))}


def _num(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def premise_values(records: Sequence[Mapping[str, Any]], table: Mapping[str, Sequence[Any]],
                   prefix: str = "dopd/") -> dict[str, Any]:
    """Token-weighted statistics over `records` (each with `<prefix>num_tokens`, `<prefix><R>/token_frac` and
    `<prefix><R>/<stat>`, as the objective reports them and the trainer logs them).

    Returns `{"tokens": {R: {"share", "teacher_rejected_frac", "priv_logp_gain"} for R in HT, HS, LH, LL, all},
    "rejected_to_teacher": share of the teacher-rejected tokens in a regime whose terms include the teacher,
    "rejected_to_self": the rest}`; None where no record defines a value (e.g. no diagnostics: an unrouted method
    that scores only the teacher)."""
    weight: dict[str, float] = {r: 0.0 for r in (*REGIMES, "all")}
    sums: dict[tuple[str, str], float] = {}
    weights: dict[tuple[str, str], float] = {}
    rejected: dict[str, float] = {r: 0.0 for r in REGIMES}
    for record in records:
        n = _num(record.get(f"{prefix}num_tokens"))
        if not n:
            continue
        for regime in (*REGIMES, "all"):
            frac = 1.0 if regime == "all" else _num(record.get(f"{prefix}{regime}/token_frac"))
            if frac is None:
                continue
            w = n * frac
            weight[regime] += w
            for stat in TOKEN_STATS:
                value = _num(record.get(f"{prefix}{regime}/{stat}"))
                if value is not None and w > 0:
                    sums[regime, stat] = sums.get((regime, stat), 0.0) + w * value
                    weights[regime, stat] = weights.get((regime, stat), 0.0) + w
            value = _num(record.get(f"{prefix}{regime}/teacher_rejected_frac"))
            if regime != "all" and value is not None:
                rejected[regime] += w * value
    total = weight["all"]
    routed_total = sum(weight[r] for r in REGIMES)
    tokens: dict[str, dict[str, Optional[float]]] = {}
    for regime in (*REGIMES, "all"):
        share = (weight[regime] / total if total and routed_total else None) if regime != "all" else (
            1.0 if total else None)
        tokens[regime] = {"share": share}
        for stat in TOKEN_STATS:
            w = weights.get((regime, stat), 0.0)
            tokens[regime][stat] = sums[regime, stat] / w if w else None
    all_rejected = sum(rejected.values())
    to_teacher = to_self = None
    if all_rejected > 0:
        teacher = teacher_regimes(table)
        to_teacher = sum(v for r, v in rejected.items() if r in teacher) / all_rejected
        to_self = 1.0 - to_teacher
    return {"tokens": tokens, "rejected_to_teacher": to_teacher, "rejected_to_self": to_self}


def premise_problems(values: Mapping[str, Any]) -> list[str]:
    """The failed premises, as short phrases (empty: they hold, or nothing was measured)."""
    problems = []
    gain = values["tokens"]["all"]["priv_logp_gain"]
    if gain is not None and gain <= 0:
        problems.append(f"p does not raise the privileged student's log-probability of the sampled tokens "
                        f"(all/priv_logp_gain {gain:+.3f} nats)")
    to_self = values["rejected_to_self"]
    if to_self is not None and to_self > 0.5:
        problems.append(f"{100 * to_self:.0f}% of the teacher-rejected tokens are routed to a self target, "
                        "not the teacher")
    return problems


class PremiseAlarmCallback(TrainerCallback):
    """After `check_steps` optimizer steps, one warning line when `premise_problems` finds any, and the values as
    `premise/*` in that step's log record (it runs before the JSONL writer: registered first by `build_trainer`).

    Reads the training log records (`dopd/*` keys) of steps <= check_steps; decides once, at the first training log
    at or after that step (a run resumed past that step does not decide again)."""

    def __init__(self, table: Mapping[str, Sequence[Any]], check_steps: int = 10) -> None:
        self.table = table
        self.check_steps = check_steps
        self.records: list[dict[str, Any]] = []
        self.decided = False
        self.fired = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.check_steps:
            self.decided = True  # resumed past the check: the run before the resume decided (its log holds it)

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kwargs: Any) -> None:
        if self.decided or not logs or "loss" not in logs:
            return
        self.records.append(dict(logs))
        if state.global_step < self.check_steps:
            return
        self.decided = True
        values = premise_values(self.records, self.table)
        gain = values["tokens"]["all"]["priv_logp_gain"]
        if gain is None and values["rejected_to_self"] is None:
            return  # no diagnostics were logged (nothing scored both privileged policies)
        measured = {"priv_logp_gain": gain, "rejected_to_teacher": values["rejected_to_teacher"],
                    "rejected_to_self": values["rejected_to_self"]}
        logs.update({f"premise/{key}": value for key, value in measured.items() if value is not None})  # no NaN
        problems = premise_problems(values)
        logs["premise/alarm"] = float(bool(problems))
        if problems and state.is_world_process_zero:
            self.fired = True
            logger.warning("DOPD premise check after %d steps: %s; DOPD may make the student worse here, see %s",
                           state.global_step, "; ".join(problems), DOCS)
