"""The text task of the privilege-illusion testbed, generated on the fly.

Add three digits, with a short reasoning chain:

    x : Question: 3 plus 7 plus 5?
    p : 3+7=10.                                   (step-wise hint: the first partial sum, never the answer)
    y : 3+7=10. 10+5=15. Answer: 15

The answer chain mixes three kinds of tokens, which is what makes the task a probe of privilege illusion:
- the second sum ("15") is *capability*: p does not contain it; the teacher has to add, the student can learn to;
- the first sum ("10") is learnable from x too, but with p it is a pure copy from the hint: a teacher trained with p
  is confident on it for a reason the deployed student never has (a shortcut);
- in a share `hidden_fraction` of questions the third operand is "the hidden one", which only p names
  ("3+7=10. the hidden one is 5."): an *information gap*; no training recovers it from x (best possible held-out
  accuracy on those questions is a 1-in-10 guess).

Every word is short and the tiny byte-level BPE tokenizer of `dopd.model.tiny` (`tokenizer="bpe"`) writes each digit
as one token: short sequences, fast CPU training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets_io import write_task_datasets

SYSTEM = "Answer briefly."
DATASET_TRAIN = "pi_text_train"
DATASET_EVAL = "pi_text_eval"
DATASET_MIXED = "pi_text_train_mixed"
# the privileged view as dopd.data's `hint` processor renders it with the default `hint_template`
HINT_TEMPLATE = "\n\n[Privileged hint]\n{hint}\n[End of hint]"


@dataclass
class TextTaskSpec:
    num_train: int = 2000
    num_eval: int = 200
    hidden_fraction: float = 0.25  # share of questions whose third operand only p names
    seed: int = 0


def make_sample(rng: random.Random, spec: TextTaskSpec) -> dict[str, Any]:
    """One sharegpt row: system, user question, assistant answer chain, `privileged` hint, plus metadata."""
    a, b, c = (rng.randint(0, 9) for _ in range(3))
    hidden = rng.random() < spec.hidden_fraction
    third = "the hidden one" if hidden else str(c)
    question = f"Question: {a} plus {b} plus {third}?"
    answer = f"{a}+{b}={a + b}. {a + b}+{c}={a + b + c}. Answer: {a + b + c}"
    hint = f"{a}+{b}={a + b}." + (f" the hidden one is {c}." if hidden else "")
    return {
        "system": SYSTEM,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "privileged": hint,
        "meta": {"hidden": hidden, "answer": a + b + c},
    }


def generate(spec: TextTaskSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows), independent draws from one stream.

    The question space is small (1,000 visible + 100 hidden-operand questions), so held-out questions may repeat a
    training question's text: the answer is a function of x, and learning it for all 1,000 inputs is the skill."""
    rng = random.Random(spec.seed)
    train = [make_sample(rng, spec) for _ in range(spec.num_train)]
    held_out = [make_sample(rng, spec) for _ in range(spec.num_eval)]
    return train, held_out


def registry_entry(file_name: str) -> dict[str, Any]:
    """A dataset_info.json entry in the shape of data/dataset_info.json (sharegpt, `privileged` column)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "system": "system", "privileged": "privileged"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
        "privilege": ["hint"],
        "eval": {"extractor": "answer", "metric": "numeric"},
    }


def write_registry(data_dir: str | Path, spec: TextTaskSpec) -> dict[str, Any]:
    """Write the train / held-out JSON files and their dataset_info.json into `data_dir`; returns a summary."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    train, held_out = generate(spec)
    write_task_datasets(data_dir, (DATASET_TRAIN, DATASET_EVAL, DATASET_MIXED), train, held_out, registry_entry,
                        lambda row: HINT_TEMPLATE.format(hint=row["privileged"]))
    hidden_eval = sum(r["meta"]["hidden"] for r in held_out) / len(held_out)
    # a student that adds perfectly and guesses the hidden digit uniformly
    ceiling = (1 - hidden_eval) + hidden_eval / 10
    return {"train": DATASET_TRAIN, "eval": DATASET_EVAL, "num_train": len(train), "num_eval": len(held_out),
            "hidden_fraction_eval": hidden_eval, "accuracy_ceiling_without_p": ceiling,
            "example": train[0]}
