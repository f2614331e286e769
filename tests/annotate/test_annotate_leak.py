"""The leak check: hints must not give the final answer away (the annotator may read the reference)."""

from __future__ import annotations

import pytest

from dopd.annotate.leak import check_leak, final_answer, to_number


@pytest.mark.parametrize("reference,answer", [
    ("so the total is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
    ("First \\boxed{1}, finally \\boxed{x^{2}+1}", "x^{2}+1"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("Step 1 ...\nAnswer: $-12.5$.", "-12.5"),
    ("34", "34"),
    ("The mitochondrion produces ATP through oxidative phosphorylation in the inner membrane, which is why it is "
     "called the powerhouse of the cell.", None),
    (None, None),
])
def test_final_answer(reference, answer):
    assert final_answer(reference) == answer


@pytest.mark.parametrize("hint,reference", [
    ("Add the two parts; you get \\boxed{7}.", "The answer is 9"),  # any \boxed{} leaks
    ("The area works out to 3/4 of the square.", "\\boxed{\\frac{3}{4}}"),  # a/b == \frac{a}{b}
    ("That gives 0.75 in the end.", "\\boxed{\\frac{3}{4}}"),  # numbers with tolerance
    ("So 72.00001 clips in total.", "#### 72"),
    ("It is 1,234 once the digits are summed.", "Answer: 1234"),
    ("Half of the people, i.e. 50%, ...", "\\boxed{50}"),
    ("Remember the capital is PARIS.", "Paris"),  # normalised case
    ("Compare the options; (C) fits.", "Answer: C"),  # explicit choice
    ("Look closely: the answer is c", "\\boxed{C}"),
    ("Use x^2 + 1 as the final form", "\\boxed{x^{2} + 1}"),
])
def test_leaking_hints_are_caught(hint, reference):
    result = check_leak(hint, reference)
    assert result.leaked, result
    assert result.reason


@pytest.mark.parametrize("hint,reference", [
    ("Split the clips sold in April and May; May is half of April.", "#### 72"),
    ("The area is a fraction of the square; compare side lengths.", "\\boxed{\\frac{3}{4}}"),
    ("Think about which city hosts the government.", "Paris"),
    ("Parisian architecture is a distraction here.", "Paris"),  # a longer word is not the answer
    ("Point C is the centre; compare angles at A and B.", "\\boxed{C}"),  # a letter in prose is not the choice
    ("Use 71 as an upper bound and check again.", "#### 72"),
    ("Recall how ATP is made.", "The mitochondrion produces ATP through oxidative phosphorylation in the inner "
                               "membrane, which is why it is called the powerhouse of the cell."),
    ("Any hint", None),
])
def test_clean_hints_pass(hint, reference):
    assert not check_leak(hint, reference).leaked


def test_tolerance_is_relative_to_the_answer():
    assert check_leak("roughly 1000.05", "\\boxed{1000}", tolerance=1e-4).leaked
    assert not check_leak("roughly 1000.5", "\\boxed{1000}", tolerance=1e-4).leaked
    assert to_number("\\dfrac{1}{8}") == 0.125 and to_number("12%") == 0.12 and to_number("abc") is None
