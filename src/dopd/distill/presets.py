"""Routing tables as data: regime -> terms (target, divergence, weight), and the named presets.

A `Term` says: on tokens of this regime, add `weight * [beta]` times the divergence of the student from the
target. A regime may hold several terms (uniform_dual) or none (no loss on its tokens; they still count in the
per-sequence token mean). A table whose four regimes hold identical terms is *unrouted*: it needs neither q_S
nor q_T, so the loss can run without the forward pass a term does not use.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from .divergences import DIVERGENCES
from .routing import REGIMES

TARGETS = ("teacher", "privileged_student", "none")
WEIGHT_KEYS = ("beta_l", "beta_w")


@dataclass(frozen=True)
class Term:
    """One loss term: `weight` (times the config value named by `weight_key`, if any) x divergence(s || target)."""

    target: str
    divergence: str
    weight: float = 1.0
    weight_key: Optional[str] = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose from {', '.join(TARGETS)}")
        if self.target != "none" and self.divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {self.divergence!r}; choose from {', '.join(DIVERGENCES)}")
        if self.weight_key is not None and self.weight_key not in WEIGHT_KEYS:
            raise ValueError(f"weight_key must be one of {WEIGHT_KEYS} or None, got {self.weight_key!r}")


RoutingTable = Mapping[str, tuple[Term, ...]]
TermSpec = Union[Term, Mapping[str, Any], Sequence[Any]]


def _term(spec: TermSpec) -> Term:
    """Term from a Term, a dict (target, divergence, weight, weight_key) or a list [target, divergence, weight].

    In the list/dict forms `weight` may be a number or the name of a config weight (`beta_l`, `beta_w`).
    """
    if isinstance(spec, Term):
        return spec
    if isinstance(spec, Mapping):
        fields = dict(spec)
    elif isinstance(spec, (list, tuple)) and 2 <= len(spec) <= 4:
        fields = dict(zip(("target", "divergence", "weight", "weight_key"), spec))
    else:
        raise ValueError(f"cannot read a routing term from {spec!r}: use [target, divergence, weight]")
    weight = fields.get("weight", 1.0)
    if isinstance(weight, str) and weight in WEIGHT_KEYS:
        fields["weight"], fields["weight_key"] = 1.0, weight
    else:
        fields["weight"] = float(weight)
    return Term(**fields)


def normalize_table(table: Mapping[str, Any]) -> dict[str, tuple[Term, ...]]:
    """Validate a table (every regime present, nothing else) and convert its entries to Terms."""
    if not isinstance(table, Mapping):
        raise ValueError(f"a routing table is a mapping regime -> list of terms, got {type(table).__name__}")
    missing = [r for r in REGIMES if r not in table]
    extra = [r for r in table if r not in REGIMES]
    if missing or extra:
        raise ValueError(f"routing table must have exactly the regimes {REGIMES}; missing {missing}, unknown {extra}")
    out = {}
    for regime in REGIMES:
        entry = table[regime]
        if isinstance(entry, (Term, Mapping)) or (
            isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str)
        ):
            entry = [entry]  # a single term
        out[regime] = tuple(t for t in (_term(e) for e in (entry or ())) if t.target != "none")
    return out


def is_routed(table: RoutingTable) -> bool:
    """True when the regimes are treated differently (the loss then needs q_S and q_T)."""
    first = sorted(table[REGIMES[0]], key=repr)
    return any(sorted(table[r], key=repr) != first for r in REGIMES[1:])


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    table: RoutingTable


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, description: str, table: Mapping[str, Any]) -> Preset:
    preset = Preset(name, description, normalize_table(table))
    PRESETS[name] = preset
    return preset


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name raises ValueError listing close matches."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.5)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown DOPD preset {name!r}{hint}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def every_token(*terms: Term) -> dict[str, tuple[Term, ...]]:
    """An unrouted table: the same terms on every token."""
    return {r: tuple(terms) for r in REGIMES}


T_JS = Term("teacher", "js")
HS_TERM = Term("privileged_student", "rkl_topk", weight_key="beta_l")
LH_TERM = Term("teacher", "rkl_topk", weight_key="beta_l")
LL_TERM = Term("privileged_student", "rkl_topk", weight_key="beta_w")

DOPD_TABLE = {"HT": (T_JS,), "HS": (HS_TERM,), "LH": (LH_TERM,), "LL": (LL_TERM,)}

register_preset(
    "dopd",
    "DOPD (paper's table). HT (A >= mean, q_T >= q_S: the teacher holds transferable capability): full-vocabulary "
    "JS to the teacher, weight 1. HS (A >= mean, q_T < q_S: the student is confident, the teacher unreliable): "
    "top-K reverse KL to the stop-gradient privileged student, beta_l. LH (A < mean, q_S + q_T >= mean: both "
    "confident and agree, the gap is mostly p): top-K reverse KL to the teacher, beta_l. LL (both unsure): "
    "top-K reverse KL to the privileged student, beta_w.",
    DOPD_TABLE,
)
register_preset(
    "vanilla_opd",
    "Vanilla on-policy distillation: the teacher scores the student's own answers and every token gets the "
    "sampled-token reverse KL log s(y) - log t(y) (REINFORCE-style gradient), no routing. The paper's main "
    "baseline uses a teacher WITHOUT privileged information: set teacher_sees_privileged=false.",
    every_token(Term("teacher", "sampled_rkl")),
)
register_preset(
    "vanilla_opd_full_rkl",
    "Vanilla OPD with the full-vocabulary reverse KL KL(s || t) on every token instead of the sampled estimator "
    "(GKD-style distribution matching, lambda = 1).",
    every_token(Term("teacher", "rkl")),
)
register_preset(
    "opsd",
    "On-policy self-distillation: the privileged student (same weights, sees p, stop-gradient) is the only target; "
    "full-vocabulary JS on every token. Needs no teacher. Also the paper's 'student-only privilege, uniform' run.",
    every_token(Term("privileged_student", "js")),
)
register_preset(
    "uniform_teacher",
    "Teacher-only privilege, uniform weights: full-vocabulary JS to the (privileged) teacher on every token, "
    "no routing (the paper's 'privilege illusion' run on the teacher side).",
    every_token(Term("teacher", "js")),
)
register_preset(
    "uniform_dual",
    "Both targets on every token with equal weights: 0.5 JS to the teacher + 0.5 JS to the privileged student, "
    "no routing.",
    every_token(Term("teacher", "js", 0.5), Term("privileged_student", "js", 0.5)),
)
register_preset(
    "ablate_no_routing",
    "Ablation, no routing: every token receives the average of the four DOPD regime terms (0.25 x [JS to T + "
    "beta_l RKL_K to S_p + beta_l RKL_K to T + beta_w RKL_K to S_p]); divergences and weights are DOPD's, only the "
    "per-token assignment is removed.",
    every_token(*(Term(t.target, t.divergence, 0.25 * t.weight, t.weight_key)
                  for t in (T_JS, HS_TERM, LH_TERM, LL_TERM))),
)
register_preset(
    "ablate_no_teacher",
    "Ablation, no teacher term: DOPD routing, but the teacher-targeted regimes (HT, LH) contribute no loss; "
    "HS and LL keep their privileged-student terms. The teacher is still scored for routing.",
    {"HT": (), "HS": (HS_TERM,), "LH": (), "LL": (LL_TERM,)},
)
register_preset(
    "ablate_no_student",
    "Ablation, no student term: DOPD routing, but the privileged-student regimes (HS, LL) contribute no loss; "
    "HT and LH keep their teacher terms. The privileged student is still scored for routing.",
    {"HT": (T_JS,), "HS": (), "LH": (LH_TERM,), "LL": ()},
)
register_preset(
    "ablate_single_divergence",
    "Ablation, one divergence for all regimes: DOPD routing, targets and weights, with full-vocabulary JS in every "
    "regime (the best single divergence in the paper's divergence ablation).",
    {"HT": (T_JS,), "HS": (Term("privileged_student", "js", weight_key="beta_l"),),
     "LH": (Term("teacher", "js", weight_key="beta_l"),),
     "LL": (Term("privileged_student", "js", weight_key="beta_w"),)},
)
register_preset(
    "ablate_topk_everywhere",
    "Ablation, top-K everywhere: the DOPD table with HT's full-vocabulary JS replaced by top-K JS.",
    {"HT": (Term("teacher", "js_topk"),), "HS": (HS_TERM,), "LH": (LH_TERM,), "LL": (LL_TERM,)},
)
register_preset(
    "ablate_full_vocab_everywhere",
    "Ablation, full vocabulary everywhere: the DOPD table with the top-K reverse KLs of HS, LH, LL replaced by "
    "full-vocabulary reverse KLs.",
    {"HT": (T_JS,), "HS": (Term("privileged_student", "rkl", weight_key="beta_l"),),
     "LH": (Term("teacher", "rkl", weight_key="beta_l"),),
     "LL": (Term("privileged_student", "rkl", weight_key="beta_w"),)},
)
register_preset(
    "dopd_hs_teacher",
    "DOPD with HS's target the teacher instead of the privileged student (top-K reverse KL, beta_l): the paper's "
    "routing, but the tokens the teacher rates below the privileged student are corrected by the teacher.",
    {"HT": (T_JS,), "HS": (Term("teacher", "rkl_topk", weight_key="beta_l"),), "LH": (LH_TERM,), "LL": (LL_TERM,)},
)
register_preset(
    "dopd_ht_rkl",
    "DOPD with HT's full-vocabulary JS replaced by the full-vocabulary reverse KL to the teacher (weight 1), whose "
    "gradient does not saturate on high-gap tokens.",
    {"HT": (Term("teacher", "rkl"),), "HS": (HS_TERM,), "LH": (LH_TERM,), "LL": (LL_TERM,)},
)
