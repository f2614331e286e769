"""Brute-force float64 reference of the DOPD objective, written from the spec with Python loops.

Shares no code with `dopd.distill`: loops over the vocabulary with `math`, sorting for top-K and the quantile.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

NEG_INF = float("-inf")
REGIMES = ("HT", "HS", "LH", "LL")


def softmax(row: Sequence[float], temperature: float = 1.0) -> list[float]:
    z = [float(x) / temperature for x in row]
    top = max(z)
    e = [math.exp(x - top) if x != NEG_INF else 0.0 for x in z]
    total = sum(e)
    return [x / total for x in e]


def _log(x: float) -> float:
    return math.log(x) if x > 0 else NEG_INF


def kl(p: Sequence[float], q: Sequence[float]) -> float:
    """KL(p || q) = sum p log(p / q) over p > 0."""
    total = 0.0
    for pv, qv in zip(p, q):
        if pv > 0:
            total += pv * (math.log(pv) - _log(qv))
    return total


def rkl(s, t):
    return kl(s, t)


def fkl(s, t):
    return kl(t, s)


def js(s, t):
    m = [(a + b) / 2 for a, b in zip(s, t)]
    return 0.5 * kl(t, m) + 0.5 * kl(s, m)


def topk(s, t, k, support="student", renormalize=True):
    if k >= len(s):
        return list(s), list(t)
    ref = s if support == "student" else t
    order = sorted(range(len(s)), key=lambda v: -ref[v])[:k]
    s_k, t_k = [s[v] for v in order], [t[v] for v in order]
    if renormalize:
        ss, ts = sum(s_k), sum(t_k)
        s_k, t_k = [x / ss for x in s_k], [x / ts for x in t_k]
    return s_k, t_k


def div(name, s, t, y, k=128, support="student", renormalize=True):
    if name == "sampled_rkl":
        return _log(s[y]) - _log(t[y])
    base, _, top = name.partition("_")
    if top:
        s, t = topk(s, t, k, support, renormalize)
    return {"js": js, "rkl": rkl, "fkl": fkl}[base](s, t)


def quantile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def trimmed_mean(xs: Sequence[float], trim: float) -> float:
    cut = quantile(xs, 1 - trim)
    kept = [x for x in xs if x <= cut]
    return sum(kept) / len(kept)


def regime(a, qs, qt, a_bar, qs_bar, qt_bar) -> str:
    if a >= a_bar:
        return "HT" if qt >= qs else "HS"
    return "LH" if qs + qt >= qs_bar + qt_bar else "LL"


def reference(
    student, priv, teacher, labels, table: dict, *, top_k=128, trim=0.05, temperature=1.0, aggregation="sequence",
    support="student", renormalize=True, keep: Optional[list] = None, statistic="sampled", veto_prob=None,
):
    """Returns (loss, per_token [B][T], regimes [B][T] (None at ignored), thresholds (A, qS, qT) or None).

    student/priv/teacher: nested lists [B][T][V] (priv/teacher may be None when the table does not need them);
    table: regime -> list of (target, divergence, weight) with numeric weights; an unrouted table has the same
    entry under every regime. keep: optional [B][T] booleans (pruning): False tokens leave the loss.
    statistic: "sampled" (q at the sampled token) or "top1" (each policy's largest probability) for the regimes;
    veto_prob: if not None, a token with teacher q(y) < veto_prob whose y is not the teacher's argmax goes to HT.
    """
    B, T = len(labels), len(labels[0])
    valid = [(b, t) for b in range(B) for t in range(T) if labels[b][t] != -100]
    routed = len({repr(table[r]) for r in REGIMES}) > 1
    reg = [[None] * T for _ in range(B)]
    thr = None
    if priv is not None and teacher is not None:
        V = len(student[0][0])  # wider (padded) target vocabularies are sliced to the student's
        def stat(logits, p):
            probs = softmax(logits[p[0]][p[1]][:V])
            return max(probs) if statistic == "top1" else probs[labels[p[0]][p[1]]]

        qs = {p: stat(priv, p) for p in valid}
        qt = {p: stat(teacher, p) for p in valid}
        gap = {p: abs(_log(qt[p]) - _log(qs[p])) for p in valid}
        thr = (trimmed_mean(list(gap.values()), trim), trimmed_mean(list(qs.values()), trim),
               trimmed_mean(list(qt.values()), trim))
        for p in valid:
            reg[p[0]][p[1]] = regime(gap[p], qs[p], qt[p], *thr)
            if veto_prob is not None:
                t_probs = softmax(teacher[p[0]][p[1]][:V])
                y = labels[p[0]][p[1]]
                if t_probs[y] < veto_prob and max(range(V), key=t_probs.__getitem__) != y:
                    reg[p[0]][p[1]] = "HT"
    per_token = [[0.0] * T for _ in range(B)]
    for b, t in valid:
        if keep is not None and not keep[b][t]:
            continue
        r = reg[b][t] if routed else REGIMES[0]
        y = labels[b][t]
        s = softmax(student[b][t], temperature)
        for target, name, weight in table[r]:
            logits = teacher if target == "teacher" else priv
            tgt = softmax(logits[b][t][: len(s)], temperature)
            per_token[b][t] += weight * div(name, s, tgt, y, top_k, support, renormalize)
    kept = [(b, t) for b, t in valid if keep is None or keep[b][t]]
    if aggregation == "token":
        loss = sum(per_token[b][t] for b, t in kept) / max(len(kept), 1)
    else:
        seq_means = []
        for b in range(B):
            toks = [t for bb, t in kept if bb == b]
            if toks:
                seq_means.append(sum(per_token[b][t] for t in toks) / len(toks))
        loss = sum(seq_means) / max(len(seq_means), 1)
    return loss, per_token, reg, thr


def paper_table(beta_l=0.6, beta_w=0.3) -> dict:
    """The paper's table, written out here independently of dopd.distill.presets."""
    return {
        "HT": [("teacher", "js", 1.0)],
        "HS": [("privileged_student", "rkl_topk", beta_l)],
        "LH": [("teacher", "rkl_topk", beta_l)],
        "LL": [("privileged_student", "rkl_topk", beta_w)],
    }


def uniform(*terms) -> dict:
    return {r: list(terms) for r in REGIMES}
