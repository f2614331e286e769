"""Answer extractors on hand-written model outputs, including the awkward ones."""

import pytest

from dopd.eval.extract import clean_reference, extract_answer, get_extractor, letters_of


@pytest.mark.parametrize("text, expected", [
    (r"so the answer is \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"first \boxed{1} then \boxed{2}", "2"),  # the last one
    (r"nested \boxed{a_{b_{c}} + \{x\}} end", r"a_{b_{c}} + \{x\}"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5 is it", "5"),
    (r"unclosed \boxed{12", None),
    ("no box here", None),
])
def test_boxed(text, expected):
    assert extract_answer(text, "boxed") == expected


@pytest.mark.parametrize("text, expected", [
    ("Work...\nAnswer: 12", "12"),
    ("The answer is (B).", "(B)"),
    ("**Final Answer:** 3.5", "3.5"),
    ("so the final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("Answer: \\boxed{9} because", "9"),
    ("answer: 1\nmore text\nAnswer: 2", "2"),
    ("nothing to see", None),
])
def test_answer_line(text, expected):
    assert extract_answer(text, "answer") == expected


@pytest.mark.parametrize("text, expected", [
    (r"reasoning \boxed{7}. Answer: 8", "7"),  # boxed wins
    ("reasoning\nAnswer: 8", "8"),
    ("line one\n\n  last line  \n", "last line"),
    ("", None),
])
def test_auto_order(text, expected):
    assert extract_answer(text, None) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is (B).", "B"),
    ("B", "B"),
    ("(C)", "C"),
    ("D. a red car", "D"),
    ("A cat sits on the mat. The answer is D", "D"),  # the article "A" is not an option
    ("I think A is wrong.\nAnswer: A, C", "A,C"),
    ("Answer: C and A", "A,C"),
    (r"\boxed{B}", "B"),
    ("Option E fits best.", "E"),
    ("The picture shows a dog.", None),
])
def test_choice(text, expected):
    assert extract_answer(text, "choice") == expected


@pytest.mark.parametrize("text, expected", [
    ("The total is 1,234.5 dollars", "1,234.5"),
    ("x = 3/4 and y = 2", "2"),
    (r"\boxed{\dfrac{-3}{4}}", "-3/4"),
    ("about 50% of them", "50%"),
    ("Answer: 1e-3", "1e-3"),
    ("Answer: 4 apples, then 7 more words", "7"),  # the last number of the narrowed text
    ("no digits", None),
])
def test_number(text, expected):
    assert extract_answer(text, "number") == expected


def test_gsm8k_and_full():
    assert extract_answer("3 * 24 = 72\n#### 72", "gsm8k") == "72"
    assert extract_answer("  keep all  ", "full") == "keep all"


def test_letters_of():
    assert letters_of("(B) 12 apples") == "B"
    assert letters_of("A and C") == "A,C"
    assert letters_of("Apples") is None


@pytest.mark.parametrize("reference, expected", [
    ("B", "B"),
    ("Total = 48.\nAnswer: 12", "12"),
    ("3 * 24 = 72\n#### 72", "72"),
    (r"so $\boxed{\frac{3}{4}}$.", r"\frac{3}{4}"),
    (None, None),
])
def test_clean_reference(reference, expected):
    assert clean_reference(reference) == expected


def test_unknown_extractor():
    with pytest.raises(ValueError, match="unknown answer extractor"):
        get_extractor("regex")
