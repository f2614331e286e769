"""Does a hint give the answer away? The paper's hints carry no final answer (a final answer as p did worse than no
p at all), so an annotator that may read the reference answer has its hints checked before they are kept.

A hint leaks when it
- holds a `\\boxed{...}` (a hint never needs one);
- holds the reference's final answer, normalised (case, spaces, `$`, `\\left`/`\\right`, `\\text{}`, `\\frac{a}{b}`
  -> a/b), as a whole phrase; a multiple-choice letter only in explicit forms ("(B)", "option B", "answer is B");
- holds a number equal to a numeric final answer within `tolerance` (|x - a| <= tolerance * max(1, |a|)),
  fractions and percentages read as numbers.
The final answer is the reference's last `\\boxed{}` content, else its "Answer: X" / "#### X" tail, else the whole
reference when it is short (long free-text references have no checkable final answer: only `\\boxed{}` is checked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

SHORT_REFERENCE = 64  # characters: a reference this short is its own final answer
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_TAIL = re.compile(r"(?:final\s+answer|answer)\s*(?:is|:)\s*(.+)$|####\s*(.+)$", re.I | re.M)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?|-?\.\d+%?")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_CHOICE = re.compile(r"^\(?([A-J])\)?\.?$")


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` / `\\fbox{...}`, nested braces balanced (unclosed ones skipped)."""
    found = []
    for match in _BOXED.finditer(text):
        depth, start = 0, match.end() - 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append(text[start + 1:i].strip())
                break
    return found


def final_answer(reference: Optional[str]) -> Optional[str]:
    """The short final answer of a reference answer, or None when there is none to check against."""
    if not reference or not reference.strip():
        return None
    boxed = boxed_contents(reference)
    if boxed and boxed[-1]:
        return boxed[-1]
    tails = [m.group(1) or m.group(2) for m in _ANSWER_TAIL.finditer(reference)]
    if tails and tails[-1].strip():
        return tails[-1].strip().strip("*").strip().rstrip(".").strip("$ ")
    text = reference.strip()
    return text if len(text) <= SHORT_REFERENCE else None


def normalise(text: str) -> str:
    """Lower case, LaTeX wrappers and braces removed, fractions as a/b, spaces collapsed (none around operators)."""
    text = _TEXT.sub(r"\1", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    text = re.sub(r"\(\s*(-?[\w.]+)\s*\)/\(\s*(-?[\w.]+)\s*\)", r"\1/\2", text)
    text = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\ |\$", " ", text)
    text = text.replace("\\%", "%").replace("{", "").replace("}", "")
    text = re.sub(r"\s*([-+*/^=<>()])\s*", r"\1", " ".join(text.lower().split()))
    return text.strip(" .")


def to_number(text: str) -> Optional[float]:
    """`12`, `-3.5`, `1,234`, `3/4`, `\\frac{3}{4}`, `25%` -> a float; None for anything else."""
    text = normalise(text).replace(" ", "")
    if not text or not _NUMBER.fullmatch(text):
        return None
    percent = text.endswith("%")
    text = text.rstrip("%").replace(",", "")
    try:
        if "/" in text:
            num, den = text.split("/")
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def numbers_in(text: str) -> list[float]:
    """Every number written in `text` (fractions, `\\frac`, thousands separators and percentages read)."""
    values = []
    for match in _NUMBER.finditer(normalise(text)):
        value = to_number(match.group(0))
        if value is not None:
            values.append(value)
            if match.group(0).endswith("%"):
                values.append(value * 100)  # "25%" also leaks an answer written as 25
    return values


@dataclass
class LeakCheck:
    leaked: bool
    reason: str = ""


def check_leak(hint: str, reference: Optional[str], tolerance: float = 1e-4) -> LeakCheck:
    """Whether `hint` gives away the final answer of `reference` (see the module docstring)."""
    if boxed_contents(hint) or _BOXED.search(hint):
        return LeakCheck(True, "the hint contains \\boxed{}")
    answer = final_answer(reference)
    if answer is None:
        return LeakCheck(False)
    norm_hint, norm_answer = normalise(hint), normalise(answer)
    if not norm_answer:
        return LeakCheck(False)
    choice = _CHOICE.match(answer.strip())
    if choice:
        letter = choice.group(1)
        forms = rf"\({letter}\)|\b(?:option|choice)\s+\(?{letter}\b|answer\s*(?:is|:)\s*\(?{letter}\b"
        if re.search(forms, hint, re.I):
            return LeakCheck(True, f"the hint names the answer choice {letter}")
        return LeakCheck(False)
    value = to_number(answer)
    if value is not None:
        for number in numbers_in(hint):
            if abs(number - value) <= tolerance * max(1.0, abs(value)):
                return LeakCheck(True, f"the hint contains the answer's value {answer!r}")
        return LeakCheck(False)
    if re.search(rf"(?<![\w]){re.escape(norm_answer)}(?![\w])", norm_hint):
        return LeakCheck(True, f"the hint contains the final answer {answer!r}")
    return LeakCheck(False)
