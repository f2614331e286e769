"""Answer extraction: a model's free-form answer -> the short answer that gets scored.

Extractors are registered by name (`register_extractor`) and chosen per dataset by the registry key
`"eval": {"extractor": ...}` in dataset_info.json (or `eval_extractor` for every dataset). Each returns the extracted
string, or None when the text holds no answer of that form (scored as wrong).

- `boxed`: the content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces balanced).
- `answer`: the last "Answer: X" / "The answer is X" / "final answer is X" (to the end of its line).
- `last_line`: the last non-empty line.
- `choice`: multiple-choice letter(s) A-J ("(B)", "B.", "The answer is B", "A, C"), as sorted letters joined by ",".
- `number`: the last number (commas, fractions, percent and scientific notation kept as written).
- `gsm8k`: the text after the last "####".
- `full`: the whole text, stripped.
- `auto` (default): boxed, then answer, then last line.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

Extractor = Callable[[str], Optional[str]]
EXTRACTORS: dict[str, Extractor] = {}

CHOICE_LETTERS = "ABCDEFGHIJ"


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    def wrap(fn: Extractor) -> Extractor:
        EXTRACTORS[name] = fn
        return fn

    return wrap


def get_extractor(name: Optional[str]) -> Extractor:
    """The extractor registered as `name` (None: `auto`); ValueError naming the known ones otherwise."""
    key = name or "auto"
    if key not in EXTRACTORS:
        raise ValueError(f"unknown answer extractor `{key}` (known: {', '.join(sorted(EXTRACTORS))})")
    return EXTRACTORS[key]


def extract_answer(text: Optional[str], extractor: Optional[str] = None) -> Optional[str]:
    if text is None:
        return None
    return get_extractor(extractor)(text)


def _balanced(text: str, open_at: int) -> Optional[str]:
    """Content between the brace at `open_at` and its matching close brace, or None if it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
    return None


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


@register_extractor("boxed")
def extract_boxed(text: str) -> Optional[str]:
    """Last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5` without braces)."""
    found: Optional[str] = None
    for match in _BOXED.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            inner = _balanced(text, start)
            if inner is not None:
                found = inner.strip()
        else:
            bare = re.match(r"([^\s$]+)", text[start:])
            if bare:
                found = bare.group(1).strip()
    return found


_ANSWER = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*[:\-]?\s*(.+)", re.IGNORECASE,
)


def _strip_answer(value: str) -> str:
    value = value.strip().strip("*").strip()  # markdown bold: **Answer:** B
    value = value.rstrip(".").strip()
    value = re.sub(r"^\$+|\$+$", "", value).strip()
    return value.rstrip(".").strip()


@register_extractor("answer")
def extract_answer_line(text: str) -> Optional[str]:
    """The last "Answer: X" / "The (final) answer is X" form, to the end of its line."""
    matches = list(_ANSWER.finditer(text))
    if not matches:
        return None
    value = _strip_answer(matches[-1].group(1).splitlines()[0])
    boxed = extract_boxed(value)
    return boxed if boxed is not None else (value or None)


@register_extractor("last_line")
def extract_last_line(text: str) -> Optional[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


@register_extractor("full")
def extract_full(text: str) -> Optional[str]:
    return text.strip() or None


@register_extractor("auto")
def extract_auto(text: str) -> Optional[str]:
    """boxed, then the Answer: form, then the last non-empty line."""
    for fn in (extract_boxed, extract_answer_line, extract_last_line):
        value = fn(text)
        if value is not None:
            return value
    return None


@register_extractor("gsm8k")
def extract_gsm8k(text: str) -> Optional[str]:
    """Text after the last `####` (GSM8K's reference format), else the auto extraction."""
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    return extract_auto(text)


# A number as written: sign, digits with thousands separators, decimals, a/b fractions, exponent, percent.
NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|-?\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?(?:[eE][-+]?\d+)?%?|-?\.\d+%?")


_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")


def _latex_fractions(text: str) -> str:
    """`\\frac{3}{4}` (also dfrac, tfrac) -> `3/4`, so a fraction reads as one number."""
    return _LATEX_FRAC.sub(r"\1/\2", text)


@register_extractor("number")
def extract_number(text: str) -> Optional[str]:
    """The last number in the (boxed / Answer:-narrowed) text, as written."""
    narrowed = extract_boxed(text) or extract_answer_line(text) or text
    narrowed, text = _latex_fractions(narrowed), _latex_fractions(text)
    found = NUMBER.findall(narrowed)
    if not found and narrowed is not text:
        found = NUMBER.findall(text)
    return found[-1] if found else None


_LETTERS = f"[{CHOICE_LETTERS}]"
# "(B)", "[B]", "B)", "B." / "B:" at a start, "option B", a bare letter that is the whole answer
_CHOICE_PATTERNS = [
    re.compile(rf"^\s*\(?({_LETTERS})\)?\s*[\.\):]?\s*$"),  # the whole text is a letter
    re.compile(rf"[\(\[]({_LETTERS})[\)\]]"),
    re.compile(rf"(?:option|choice)\s*\(?({_LETTERS})\b", re.IGNORECASE),
    re.compile(rf"(?:^|\n)\s*\(?({_LETTERS})[\.\):]\s"),
    re.compile(rf"(?<![A-Za-z])({_LETTERS})(?![A-Za-z])(?=\s*(?:$|[\.\),:;]|\s+(?:and|or)\s))"),
]
_LETTER_SET = re.compile(rf"^\s*\(?{_LETTERS}\)?(?:\s*(?:,|and|&|/)\s*\(?{_LETTERS}\)?)+\s*\.?\s*$", re.IGNORECASE)


def letters_of(text: str) -> Optional[str]:
    """The option letter(s) named by a short answer: "B", "(B)", "B. a cat", "A, C", "A and C" -> "B" / "A,C"."""
    text = text.strip()
    if _LETTER_SET.match(text):
        found = sorted(set(re.findall(rf"(?<![A-Za-z])({_LETTERS})(?![A-Za-z])", text)))
        return ",".join(found) if found else None
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


@register_extractor("choice")
def extract_choice(text: str) -> Optional[str]:
    """Multiple-choice letter(s): from the boxed / Answer: part if there is one, else from the last line that names
    a letter, else from anywhere."""
    for part in (extract_boxed(text), extract_answer_line(text)):
        if part:
            found = letters_of(part)
            if found:
                return found
    for line in reversed([x for x in text.splitlines() if x.strip()]):
        found = letters_of(line)
        if found:
            return found
    return None


def clean_reference(reference: Optional[str]) -> Optional[str]:
    """The short form of a reference answer: a `\\boxed{}` inside it, the text after `####`, or a final
    "Answer: X" of a worked solution (full-solution references such as MATH's, GSM8K's or the demo data's),
    else the reference stripped."""
    if reference is None:
        return None
    if "\\boxed" in reference or "\\fbox" in reference:
        boxed = extract_boxed(reference)
        if boxed is not None:
            return boxed
    if "####" in reference:
        tail = reference.rsplit("####", 1)[1].strip()
        if tail:
            return tail
    stated = extract_answer_line(reference)  # a worked solution ending in "Answer: X"
    if stated is not None:
        return stated
    return reference.strip()
