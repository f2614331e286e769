#!/usr/bin/env python
"""Regenerate the bundled demo datasets in data/ (deterministic: same files on every run).

- data/vlm_demo.json + data/vlm_demo/*.png|jpg: small images of coloured shapes; one question about one object
  per sample, a short reasoned answer ending in `Answer: X`, and privileged info: labelled boxes of the objects the
  question is about and crop regions around them (LLaMA-Factory sharegpt format + `privileged` column).
- data/llm_demo.jsonl: math and logic word problems (alpaca format) with a step-wise hint as privileged info that
  never states the final answer, and a reference answer ending in `Answer: X`.

Usage: python scripts/make_demo_data.py [OUTPUT_DIR]   (default: data/ next to this script's parent)
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys

from PIL import Image, ImageDraw

SEED = 1234
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")


# ----------------------------------------------------------------------------------------------------- images
def _place(rng: random.Random, w: int, h: int, n: int, sizes: tuple[int, int] = (18, 38)) -> list[dict]:
    """n non-overlapping shapes with distinct (colour, shape) labels and a 4 px margin to the border."""
    objs: list[dict] = []
    labels = [(c, s) for c in COLOURS for s in SHAPES]
    rng.shuffle(labels)
    for colour, shape in labels:
        if len(objs) == n:
            break
        for _ in range(200):
            size = rng.randint(*sizes)
            x1, y1 = rng.randint(4, w - size - 4), rng.randint(4, h - size - 4)
            box = [x1, y1, x1 + size, y1 + size]
            if all(box[2] + 4 <= o["bbox"][0] or o["bbox"][2] + 4 <= box[0] or box[3] + 4 <= o["bbox"][1]
                   or o["bbox"][3] + 4 <= box[1] for o in objs):
                objs.append({"colour": colour, "shape": shape, "bbox": box, "label": f"{colour} {shape}"})
                break
    return objs


def _draw(w: int, h: int, objs: list[dict], background: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    for o in objs:
        x1, y1, x2, y2 = o["bbox"]
        fill = COLOURS[o["colour"]]
        if o["shape"] == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif o["shape"] == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
    return image


def _centre(o: dict) -> tuple[float, float]:
    x1, y1, x2, y2 = o["bbox"]
    return (x1 + x2) / 2, (y1 + y2) / 2


def _area(o: dict) -> int:
    x1, y1, x2, y2 = o["bbox"]
    return (x2 - x1) * (y2 - y1)


def _pad(bbox: list[int], w: int, h: int, pad: int = 4) -> list[int]:
    return [max(0, bbox[0] - pad), max(0, bbox[1] - pad), min(w, bbox[2] + pad), min(h, bbox[3] + pad)]


def _box(o: dict, image: int = 0) -> dict:
    box = {"label": o["label"], "bbox": list(o["bbox"])}
    if image:
        box["image"] = image
    return box


# one function per question kind: (objs, w, h, rng) -> (question, answer, boxes, crops) or None when it does not fit
def q_same_colour(objs, w, h, rng):
    target = rng.choice(objs)
    same = [o for o in objs if o is not target and o["colour"] == target["colour"]]
    others = ", ".join(o["label"] for o in same) or "none"
    answer = (f"The {target['label']} is {target['colour']}. Other {target['colour']} shapes: {others}. "
              f"Answer: {len(same)}")
    question = f"How many other shapes have the same colour as the {target['label']}?"
    return question, answer, [_box(o) for o in [target] + same], [_pad(target["bbox"], w, h)]


def q_left_right(objs, w, h, rng):
    a, b = rng.sample(objs, 2)
    dx = _centre(a)[0] - _centre(b)[0]
    if abs(dx) < 12:
        return None
    side = "left" if dx < 0 else "right"
    answer = (f"The {a['label']} is centred at x={_centre(a)[0]:.0f}, the {b['label']} at x={_centre(b)[0]:.0f}. "
              f"Answer: {side}")
    question = f"Is the {a['label']} to the left or to the right of the {b['label']}? Answer left or right."
    return question, answer, [_box(a), _box(b)], [_pad(a["bbox"], w, h), _pad(b["bbox"], w, h)]


def q_nearest(objs, w, h, rng):
    if len(objs) < 3:
        return None
    target = rng.choice(objs)
    dists = sorted((math.dist(_centre(target), _centre(o)), o["label"], o) for o in objs if o is not target)
    if dists[1][0] - dists[0][0] < 8:
        return None
    nearest = dists[0][2]
    answer = (f"The nearest shape to the {target['label']} is {dists[0][0]:.0f} px away; the next is "
              f"{dists[1][0]:.0f} px away. Answer: {nearest['label']}")
    question = f"Which shape is closest to the {target['label']}? Give its colour and shape."
    return question, answer, [_box(target), _box(nearest)], [_pad(target["bbox"], w, h)]


def q_larger(objs, w, h, rng):
    a, b = rng.sample(objs, 2)
    ra = _area(a) / _area(b)
    if 0.75 < ra < 1.33:
        return None
    verdict = "yes" if ra > 1 else "no"
    side_a, side_b = a["bbox"][2] - a["bbox"][0], b["bbox"][2] - b["bbox"][0]
    answer = f"The {a['label']} is {side_a} px wide, the {b['label']} {side_b} px. Answer: {verdict}"
    question = f"Is the {a['label']} larger than the {b['label']}? Answer yes or no."
    return question, answer, [_box(a), _box(b)], [_pad(a["bbox"], w, h), _pad(b["bbox"], w, h)]


QUESTIONS = (q_same_colour, q_left_right, q_nearest, q_larger)


def make_vlm_demo(out_dir: str, rng: random.Random, n_single: int = 24, n_pair: int = 2) -> list[dict]:
    media = os.path.join(out_dir, "vlm_demo")
    os.makedirs(media, exist_ok=True)
    samples: list[dict] = []
    k = 0
    while len(samples) < n_single:
        w, h = rng.randint(96, 160), rng.randint(96, 160)
        objs = _place(rng, w, h, rng.randint(3, 5))
        made = QUESTIONS[len(samples) % len(QUESTIONS)](objs, w, h, rng)
        if made is None:
            continue
        question, answer, boxes, crops = made
        name = f"vlm_demo/{k:03d}." + ("jpg" if k % 5 == 4 else "png")
        image = _draw(w, h, objs, background=(rng.randint(235, 255),) * 3)
        image.save(os.path.join(out_dir, name), **({"quality": 90} if name.endswith("jpg") else {"optimize": True}))
        k += 1
        samples.append({
            "messages": [{"role": "user", "content": f"<image>{question}"},
                         {"role": "assistant", "content": answer}],
            "images": [name],
            "privileged": {"boxes": boxes, "crops": crops},
        })
    for _ in range(n_pair):  # two images, the same object in both at different sizes
        names, objs_pair, sizes = [], [], []
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        for j, size in enumerate(rng.sample([(16, 22), (34, 42)], 2)):
            w, h = rng.randint(96, 160), rng.randint(96, 160)
            objs = [o for o in _place(rng, w, h, 4) if (o["colour"], o["shape"]) != (colour, shape)][:3]
            target = None
            while target is None:
                cand = _place(rng, w, h, 1, sizes=size)[0]
                cand.update(colour=colour, shape=shape, label=f"{colour} {shape}")
                b = cand["bbox"]
                if all(b[2] + 4 <= o["bbox"][0] or o["bbox"][2] + 4 <= b[0] or b[3] + 4 <= o["bbox"][1]
                       or o["bbox"][3] + 4 <= b[1] for o in objs):
                    target = cand
            name = f"vlm_demo/{k:03d}.png"
            _draw(w, h, objs + [target], background=(250, 250, 250)).save(os.path.join(out_dir, name), optimize=True)
            k += 1
            names.append(name)
            objs_pair.append((target, w, h))
            sizes.append(target["bbox"][2] - target["bbox"][0])
        larger = 1 if sizes[0] > sizes[1] else 2
        question = f"<image><image>The {colour} {shape} appears in both images. In which image is it larger?"
        answer = (f"It is {sizes[0]} px wide in image 1 and {sizes[1]} px wide in image 2. Answer: image {larger}")
        samples.append({
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "images": names,
            "privileged": {
                "boxes": [_box(t, image=i) for i, (t, _, _) in enumerate(objs_pair)],
                "crops": [{"bbox": _pad(t["bbox"], w, h), "image": i} for i, (t, w, h) in enumerate(objs_pair)],
            },
        })
    return samples


# ---------------------------------------------------------------------------------------------------- text
def p_change(rng):
    price, count = rng.randint(2, 9), rng.randint(3, 9)
    paid = (price * count // 10 + 1) * 10 + rng.choice([0, 10])
    ans = paid - price * count
    return (f"A notebook costs {price} dollars. Mia buys {count} notebooks and pays with {paid} dollars. "
            "How much change does she get?",
            "Step 1: multiply the price of one notebook by the number of notebooks to get the total cost.\n"
            "Step 2: subtract the total cost from the amount paid.",
            f"Total cost = {count} x {price} = {price * count} dollars. Change = {paid} - {price * count} = {ans} "
            f"dollars.\nAnswer: {ans}", ans)


def p_linear(rng):
    a, x, b = rng.randint(2, 9), rng.randint(-6, 12), rng.randint(1, 20)
    c = a * x + b
    return (f"Solve for x: {a}x + {b} = {c}.",
            "Step 1: subtract the constant term from both sides.\nStep 2: divide both sides by the coefficient of x.",
            f"{a}x = {c} - {b} = {c - b}, so x = {c - b} / {a} = {x}.\nAnswer: {x}", x)


def p_series(rng):
    n = rng.randint(11, 60)
    s = n * (n + 1) // 2
    return (f"What is the sum of all integers from 1 to {n}?",
            "Step 1: pair the smallest number with the largest, the second smallest with the second largest, and so "
            "on; every pair has the same sum.\nStep 2: multiply that pair sum by the number of pairs (half the count "
            "of numbers).",
            f"Each pair sums to {n + 1} and there are {n}/2 pairs: {n + 1} x {n} / 2 = {s}.\nAnswer: {s}", s)


def p_rectangle(rng):
    a, b = rng.randint(3, 15), rng.randint(3, 15)
    perimeter = 2 * (a + b)
    return (f"A rectangle has a perimeter of {perimeter} cm and one side of {a} cm. What is its area in cm^2?",
            "Step 1: half the perimeter equals the sum of two adjacent sides.\n"
            "Step 2: subtract the known side to get the other side, then multiply the two sides.",
            f"Half the perimeter is {perimeter // 2}, so the other side is {perimeter // 2} - {a} = {b}. "
            f"Area = {a} x {b} = {a * b}.\nAnswer: {a * b}", a * b)


def p_ages(rng):
    ben, diff = rng.randint(5, 30), rng.randint(2, 12)
    anna = ben + diff
    return (f"Anna is {diff} years older than Ben. The sum of their ages is {anna + ben}. How old is Anna?",
            "Step 1: remove the age difference from the sum; what is left is twice the younger person's age.\n"
            "Step 2: halve it to get the younger age, then add the difference back.",
            f"({anna + ben} - {diff}) / 2 = {ben} is Ben's age, so Anna is {ben} + {diff} = {anna}.\nAnswer: {anna}",
            anna)


def p_discount(rng):
    price, pct = rng.choice([40, 60, 80, 120, 150, 200, 250]), rng.choice([10, 20, 25, 30, 40, 50])
    off = price * pct // 100
    return (f"A jacket costs {price} dollars and is discounted by {pct}%. What is the new price in dollars?",
            "Step 1: compute the discount as that percentage of the original price.\n"
            "Step 2: subtract the discount from the original price.",
            f"Discount = {pct}% of {price} = {off}. New price = {price} - {off} = {price - off}.\n"
            f"Answer: {price - off}", price - off)


def p_order(rng):
    names = rng.sample(["Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus"], 3)
    a, b, c = names  # true order: a, b, c
    ask_last = rng.random() < 0.5
    ans = c if ask_last else a
    return (f"Three runners finish a race. {b} finishes after {a}. {c} finishes after {b}. "
            f"Who finishes {'last' if ask_last else 'first'}?",
            "Step 1: write down the order each statement implies for its two runners.\n"
            "Step 2: chain the two statements into one order and read off the requested position.",
            f"{a} is before {b} and {b} is before {c}, so the order is {a}, {b}, {c}.\nAnswer: {ans}", ans)


PROBLEMS = (p_change, p_linear, p_series, p_rectangle, p_ages, p_discount, p_order)


def make_llm_demo(rng: random.Random, per_kind: int = 4) -> list[dict]:
    rows = []
    for _ in range(per_kind):
        for make in PROBLEMS:
            question, hint, reference, answer = make(rng)
            # the paper: a hint that gives away the final answer is worse than no hint at all
            assert not re.search(rf"(?<![\w-]){re.escape(str(answer))}(?!\w)", hint), (hint, answer)
            rows.append({"instruction": question, "output": reference, "privileged": hint})
    return rows


def main(out_dir: str) -> None:
    rng = random.Random(SEED)
    os.makedirs(out_dir, exist_ok=True)
    vlm = make_vlm_demo(out_dir, rng)
    with open(os.path.join(out_dir, "vlm_demo.json"), "w", encoding="utf-8") as fh:
        json.dump(vlm, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    llm = make_llm_demo(rng)
    with open(os.path.join(out_dir, "llm_demo.jsonl"), "w", encoding="utf-8") as fh:
        for row in llm:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(vlm)} VLM samples and {len(llm)} LLM samples to {out_dir}")


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
    main(sys.argv[1] if len(sys.argv) > 1 else default)
