"""Scoring one extracted answer against a reference, and aggregating many (accuracy, pass@k, mean@k).

Metrics are registered by name and chosen per dataset (`"eval": {"metric": ...}` in dataset_info.json, or
`eval_metric`):
- `exact`: equal after `normalize_answer` (case, spaces, `$`, `\\text{}`, `\\left`/`\\right`, trailing period, ...).
- `numeric`: both sides read as numbers (`parse_number`: commas, fractions, `\\frac`, percent, scientific) and agree
  within a relative tolerance; falls back to `exact` when either side is not a number.
- `choice`: the same option letter(s) (`dopd.eval.extract.letters_of` on both sides; sets compare as sets).
- `auto` (default): `choice` when the reference is a bare option letter, `numeric` when it is a number, else `exact`.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional, Sequence

from .extract import CHOICE_LETTERS, letters_of

Metric = Callable[[Optional[str], str, float], bool]
METRICS: dict[str, Metric] = {}

DEFAULT_TOLERANCE = 1e-4


def register_metric(name: str) -> Callable[[Metric], Metric]:
    def wrap(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn

    return wrap


def get_metric(name: Optional[str]) -> Metric:
    key = name or "auto"
    if key not in METRICS:
        raise ValueError(f"unknown metric `{key}` (known: {', '.join(sorted(METRICS))})")
    return METRICS[key]


def score(prediction: Optional[str], reference: str, metric: Optional[str] = None,
          tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether the extracted `prediction` matches `reference` under `metric` (None prediction: wrong)."""
    if prediction is None or reference is None:
        return False
    return bool(get_metric(metric)(prediction, reference, tolerance))


# ---------------------------------------------------------------------------------------------- normalisation
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")


def normalize_answer(text: str) -> str:
    """A canonical form for string comparison: lower case, no spaces, no `$`, `\\text{..}` unwrapped,
    `\\dfrac`/`\\tfrac` -> `\\frac`, no `\\left`/`\\right`/`\\!`/`\\,`, degrees and a trailing period dropped."""
    s = text.strip()
    s = _TEXT_CMD.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "^\\circ", "^{\\circ}", "°"):
        s = s.replace(token, "")
    s = re.sub(r"\s+", "", s).lower()
    s = s.rstrip(".")
    if len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    return s


_FRAC = re.compile(r"^(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}$")
_PLAIN = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$")


def parse_number(text: Optional[str]) -> Optional[float]:
    """A number written as `1,234.5`, `-3/4`, `\\frac{3}{4}`, `50%` (-> 0.5), `1e-3`, `x = 5`, `\\$12`; else None."""
    if text is None:
        return None
    s = normalize_answer(text.replace("\\$", ""))
    s = s.replace("\\%", "%")
    if "=" in s:  # "x=5": the right-hand side
        s = s.rsplit("=", 1)[1]
    percent = s.endswith("%")
    s = s.rstrip("%")
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    value: Optional[float] = None
    frac = _FRAC.match(s)
    if frac:
        sign, num, den = frac.groups()
        value = _divide(num, den, negative=bool(sign))
    elif re.fullmatch(r"[-+]?[\d.]+/[\d.]+", s):
        num, den = s.split("/")
        value = _divide(num, den)
    elif _PLAIN.match(s):
        value = float(s)
    if value is None or not math.isfinite(value):
        return None
    return value / 100.0 if percent else value


def _divide(num: str, den: str, negative: bool = False) -> Optional[float]:
    try:
        value = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return None
    return -value if negative else value


def numbers_close(a: float, b: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(b))


# --------------------------------------------------------------------------------------------------- metrics
@register_metric("exact")
def exact_match(prediction: Optional[str], reference: str, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    return prediction is not None and normalize_answer(prediction) == normalize_answer(reference)


@register_metric("numeric")
def numeric_match(prediction: Optional[str], reference: str, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Numbers within tolerance. A percent on one side only also matches its plain value ("50%" vs "50")."""
    if prediction is None:
        return False
    ref, pred = parse_number(reference), parse_number(prediction)
    if ref is None or pred is None:
        return exact_match(prediction, reference)
    candidates = {pred}
    if ("%" in prediction) != ("%" in reference):
        candidates.add(pred * 100.0 if "%" in prediction else pred / 100.0)
    return any(numbers_close(p, ref, tolerance) for p in candidates)


@register_metric("choice")
def choice_match(prediction: Optional[str], reference: str, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Same option letter(s); a prediction that is not a letter is compared with the reference text as `exact`
    (so an option written out in full still counts when the reference is the option text)."""
    if prediction is None:
        return False
    ref, pred = letters_of(reference), letters_of(prediction)
    if ref is None:
        return exact_match(prediction, reference)
    return pred is not None and set(pred.split(",")) == set(ref.split(","))


_BARE_LETTERS = re.compile(rf"^\s*\(?[{CHOICE_LETTERS}]\)?(?:\s*,\s*\(?[{CHOICE_LETTERS}]\)?)*\s*\.?\s*$")


@register_metric("auto")
def auto_match(prediction: Optional[str], reference: str, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    if _BARE_LETTERS.match(reference):
        return choice_match(prediction, reference, tolerance)
    if parse_number(reference) is not None:
        return numeric_match(prediction, reference, tolerance)
    return exact_match(prediction, reference, tolerance)


# ------------------------------------------------------------------------------------------------ aggregation
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021),
    computed as a product to stay exact for large n."""
    if k < 1 or k > n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_at_k(correct: Sequence[bool]) -> float:
    """mean@k of one prompt: the fraction of its k samples that are correct."""
    return sum(bool(c) for c in correct) / len(correct) if correct else 0.0


def parse_ks(spec: Optional[str], num_samples: int) -> list[int]:
    """`eval_pass_k` ("1,4,8") -> sorted ks; default: 1 and num_samples. Every k must be in [1, num_samples]."""
    if spec is None or str(spec).strip() == "":
        return sorted({1, num_samples})
    try:
        ks = sorted({int(x) for x in str(spec).split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"eval_pass_k: expected integers separated by commas, got {spec!r}") from None
    bad = [k for k in ks if not 1 <= k <= num_samples]
    if bad:
        raise ValueError(f"eval_pass_k: k must be between 1 and eval_num_samples={num_samples}, got {bad}")
    return ks


def aggregate(correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """Metrics of one dataset from per-prompt correctness lists (all of the same length n).

    `accuracy` is the mean correctness over all samples (the unbiased pass@1; with one greedy answer per prompt,
    plain accuracy). With n > 1 also `pass@k` for each k and `mean@n`."""
    if not correct:
        return {"num_prompts": 0.0, "accuracy": 0.0}
    n = len(correct[0])
    if any(len(c) != n for c in correct):
        raise ValueError("every prompt needs the same number of samples")
    out: dict[str, float] = {
        "num_prompts": float(len(correct)),
        "accuracy": sum(mean_at_k(c) for c in correct) / len(correct),
    }
    if n > 1:
        for k in ks:
            out[f"pass@{k}"] = sum(pass_at_k(n, sum(map(bool, c)), k) for c in correct) / len(correct)
        out[f"mean@{n}"] = out["accuracy"]
    return out


def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion `correct / n` (95 % at z = 1.96); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
