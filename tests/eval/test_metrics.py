"""Scoring and aggregation: exact / numeric / choice, the unbiased pass@k estimator, mean@k."""

import itertools
import math

import pytest

from dopd.eval.metrics import aggregate, mean_at_k, normalize_answer, parse_ks, parse_number, pass_at_k, score


@pytest.mark.parametrize("text, value", [
    ("1,234", 1234.0), ("1,234.5", 1234.5), ("-3/4", -0.75), (r"\frac{3}{4}", 0.75), (r"\dfrac{1}{8}", 0.125),
    ("50%", 0.5), (r"50\%", 0.5), ("1e-3", 0.001), ("x = 5", 5.0), (r"\$12", 12.0), ("12.", 12.0),
    (r"\text{7}", 7.0), ("1/0", None), ("abc", None), ("1,23", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == (pytest.approx(value) if value is not None else None)


def test_normalize():
    assert normalize_answer(r"\left( 3, \frac{\pi}{2} \right)") == normalize_answer(r"(3,\frac{\pi}{2})")
    assert normalize_answer(r"\text{Yes}.") == "yes"
    assert normalize_answer(r"90^\circ") == "90"


@pytest.mark.parametrize("pred, ref, metric, ok", [
    ("1,234", "1234", "numeric", True),
    ("3/4", r"\frac{3}{4}", "numeric", True),
    ("0.75", "3/4", "numeric", True),
    ("50%", "0.5", "numeric", True),
    ("50%", "50", "numeric", True),  # percent on one side only
    ("0.5", "50%", "numeric", True),
    ("0.33334", "1/3", "numeric", True),  # within 1e-4 relative
    ("0.334", "1/3", "numeric", False),
    ("1000.05", "1000", "numeric", True),  # relative tolerance scales with |ref|
    ("1000.5", "1000", "numeric", False),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", "numeric", True),  # not numbers: exact fallback
    ("Yes", "yes", "exact", True),
    ("yes sir", "yes", "exact", False),
    ("(B)", "B", "choice", True),
    ("B. cat", "B", "choice", True),
    ("C", "B", "choice", False),
    ("A,C", "A, C", "choice", True),
    ("A", "A, C", "choice", False),
    ("blue", "blue", "choice", True),  # a non-letter reference is compared as text
    ("B", "B", "auto", True),
    ("12.0", "12", "auto", True),
    ("Paris", "paris", "auto", True),
    (None, "1", "auto", False),
])
def test_score(pred, ref, metric, ok):
    assert score(pred, ref, metric) is ok


def test_tolerance_argument():
    assert score("1.05", "1", "numeric", tolerance=0.1)
    assert not score("1.05", "1", "numeric", tolerance=0.01)


def _pass_at_k_brute(correct, k):
    """Probability that a random k-subset of the samples contains a correct one."""
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n, c, k", [(4, 0, 1), (4, 1, 1), (4, 1, 2), (5, 2, 2), (6, 3, 4), (8, 7, 3), (5, 5, 5)])
def test_pass_at_k_matches_brute_force(n, c, k):
    correct = [True] * c + [False] * (n - c)
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_brute(correct, k))
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_limits():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 1, 10) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_aggregate_and_mean():
    correct = [[True, False, False, False], [True, True, True, True], [False] * 4]
    out = aggregate(correct, ks=[1, 2, 4])
    assert out["num_prompts"] == 3
    assert out["accuracy"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert out["mean@4"] == out["accuracy"] == pytest.approx(out["pass@1"])
    assert out["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert out["pass@4"] == pytest.approx(2 / 3)
    assert mean_at_k([True, False]) == 0.5
    greedy = aggregate([[True], [False]], ks=[1])
    assert greedy == {"num_prompts": 2.0, "accuracy": 0.5}


def test_parse_ks():
    assert parse_ks(None, 8) == [1, 8]
    assert parse_ks("4,1,2", 8) == [1, 2, 4]
    with pytest.raises(ValueError, match="between 1 and"):
        parse_ks("16", 8)
