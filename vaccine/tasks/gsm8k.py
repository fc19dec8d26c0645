"""GSM8K grade-school math: the paper's reasoning task, scored on the final number.

Full GSM8K is not reachable offline. The stand-in is forgelm's 40 real word problems (always in the test
split, since they have no worked solutions to train on) plus generated multi-step arithmetic word problems
(see ``generate``) whose integer answers are computed, not written, so every label is right.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

from vaccine.assets import asset_file
from vaccine.data.files import read_text
from vaccine.data.records import Record
from vaccine.errors import DataError
from vaccine.tasks.base import SEED, TASKS, Task, gold, pick_field, split_records

FINAL = "The final answer is"
N_GENERATED = 2000
TEST_SIZE = 300
MATH_FILE = "templates/grpo-math/data.jsonl"

# The last final-answer phrase wins; the first number after it is the answer.
_PHRASE = re.compile(r"the final answer is|####|answer\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+|:\d\d)?")
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations, e.g. <<48/2=24>>


def normalize_number(text: str) -> str:
    """'$1,200.00' -> '1200', '-3.50' -> '-3.5': one spelling per value, so strings can be compared."""
    text = text.replace("$", "").replace(",", "").replace(" ", "")
    if "." in text and ":" not in text and "/" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _value(text: str) -> Fraction | str:
    """A number as an exact Fraction (integers, decimals, a/b); times like 12:15 stay strings."""
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return text


def extract_number(answer: str, strict: bool = False) -> str | None:
    """The number after the last final-answer phrase, else (unless ``strict``) the last number."""
    phrases = list(_PHRASE.finditer(answer))
    if phrases:
        found = _NUMBER.search(answer, phrases[-1].end())
        if found:
            return normalize_number(found.group())
    if strict:
        return None
    numbers = _NUMBER.findall(answer)
    return normalize_number(numbers[-1]) if numbers else None


# ---------------------------------------------------------------- generated word problems
NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Farid",
    "Grace",
    "Hana",
    "Ivan",
    "Jade",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wes",
    "Yuki",
)
ITEMS = (
    "apples",
    "pencils",
    "stickers",
    "marbles",
    "cookies",
    "cards",
    "oranges",
    "stamps",
    "shells",
    "beads",
)
VEHICLES = ("train", "bus", "car", "truck", "cyclist", "boat")
THINGS = ("jacket", "bike", "lamp", "backpack", "game", "watch", "chair", "tent")


@dataclass(frozen=True)
class Problem:
    """One generated problem; ``values`` are the drawn numbers, so a test can recompute ``answer``."""

    template: str
    question: str
    solution: str
    answer: int
    values: dict


def _packs(rng: random.Random) -> Problem:
    (name, friend), item = rng.sample(NAMES, 2), rng.choice(ITEMS)
    a, b = rng.randint(2, 12), rng.randint(3, 15)
    c = rng.randint(1, a * b - 1)
    q = (
        f"{name} buys {a} packs of {item} with {b} {item} in each pack, then gives {c} {item} to {friend}. "
        f"How many {item} does {name} have left?"
    )
    s = f"{name} buys {a} x {b} = {a * b} {item}. After giving {c} away, {a * b} - {c} = {a * b - c} remain."
    return Problem("packs", q, s, a * b - c, {"a": a, "b": b, "c": c})


def _share(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    k, per, e = rng.randint(2, 9), rng.randint(4, 20), rng.randint(1, 3)
    q = (
        f"{name} has {k * per} {item} and shares them equally among {k} friends. Each friend then uses {e} "
        f"of them. How many {item} does each friend have now?"
    )
    s = f"Each friend gets {k * per} / {k} = {per}. After using {e}, each has {per} - {e} = {per - e}."
    return Problem("share", q, s, per - e, {"k": k, "per": per, "e": e})


def _speed(rng: random.Random) -> Problem:
    v = rng.choice(VEHICLES)
    s1, h1, s2, h2 = rng.randint(2, 12) * 5, rng.randint(1, 5), rng.randint(2, 12) * 5, rng.randint(1, 4)
    q = (
        f"A {v} travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. "
        "How many kilometres does it travel in total?"
    )
    total = s1 * h1 + s2 * h2
    s = f"First {s1} x {h1} = {s1 * h1} km, then {s2} x {h2} = {s2 * h2} km: {s1 * h1} + {s2 * h2} = {total}."
    return Problem("speed", q, s, s1 * h1 + s2 * h2, {"s1": s1, "h1": h1, "s2": s2, "h2": h2})


def _change(rng: random.Random) -> Problem:
    name, (i1, i2) = rng.choice(NAMES), rng.sample(ITEMS, 2)
    a, p, b, r = rng.randint(1, 6), rng.randint(1, 9), rng.randint(1, 6), rng.randint(1, 9)
    total = a * p + b * r
    bill = next(b for b in (20, 50, 100, 200) if b > total)
    q = (
        f"{name} buys {a} {i1} at ${p} each and {b} {i2} at ${r} each, and pays with a ${bill} bill. "
        f"How many dollars of change does {name} get?"
    )
    s = f"The cost is {a} x {p} + {b} x {r} = {total} dollars; change: {bill} - {total} = {bill - total}."
    return Problem("change", q, s, bill - total, {"a": a, "p": p, "b": b, "r": r, "bill": bill})


def _ages(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    x, d, y = rng.randint(4, 40), rng.randint(1, 15), rng.randint(2, 20)
    q = f"{name} is {x} years old. {friend} is {d} years older. How old will {friend} be in {y} years?"
    s = f"{friend} is {x} + {d} = {x + d} now, and in {y} years will be {x + d} + {y} = {x + d + y}."
    return Problem("ages", q, s, x + d + y, {"x": x, "d": d, "y": y})


def _times_as_old(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    x, m = rng.randint(5, 15), rng.randint(2, 4)
    y = rng.randint(1, x - 1)
    q = f"{name} is {x} years old. {name}'s grandmother is {m} times as old. How old was she {y} years ago?"
    s = f"She is {m} x {x} = {m * x} now, so {y} years ago she was {m * x} - {y} = {m * x - y}."
    return Problem("times_as_old", q, s, m * x - y, {"x": x, "m": m, "y": y})


def _savings(rng: random.Random) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    w, n = rng.randint(3, 25), rng.randint(4, 20)
    c = rng.randint(1, w * n - 1)
    q = (
        f"{name} saves ${w} every week. After {n} weeks, {name} buys a {thing} for ${c}. "
        f"How many dollars does {name} have left?"
    )
    s = f"{name} saves {w} x {n} = {w * n} dollars, and {w * n} - {c} = {w * n - c} are left."
    return Problem("savings", q, s, w * n - c, {"w": w, "n": n, "c": c})


def _discount(rng: random.Random) -> Problem:
    thing, price, pct = (
        rng.choice(THINGS),
        rng.randint(1, 30) * 20,
        rng.choice((10, 15, 20, 25, 30, 40, 50, 75)),
    )
    off = price * pct // 100
    q = f"A {thing} costs ${price}. It is on sale for {pct}% off. What is the sale price in dollars?"
    s = f"The discount is {pct}% of {price} = {off} dollars; sale price: {price} - {off} = {price - off}."
    return Problem("discount", q, s, price - off, {"price": price, "pct": pct})


def _bakery(rng: random.Random) -> Problem:
    item = rng.choice(("muffins", "rolls", "pies", "bagels", "cupcakes"))
    a, b, d = rng.randint(2, 10), rng.randint(6, 24), rng.randint(2, 7)
    c = rng.randint(1, a * b - 1)
    q = (
        f"A bakery bakes {a} trays of {item} each day with {b} {item} on each tray, and sells {c} {item} a "
        f"day. How many unsold {item} are there after {d} days?"
    )
    s = (
        f"It bakes {a} x {b} = {a * b} a day and {a * b} - {c} = {a * b - c} are unsold each day; "
        f"over {d} days that is {a * b - c} x {d} = {(a * b - c) * d}."
    )
    return Problem("bakery", q, s, (a * b - c) * d, {"a": a, "b": b, "c": c, "d": d})


def _pages(rng: random.Random) -> Problem:
    name, p = rng.choice(NAMES), rng.randint(5, 40)
    t = 3 * p + rng.randint(1, 200)
    q = (
        f"{name}'s book has {t} pages. {name} reads {p} pages on Monday and twice as many on Tuesday. "
        "How many pages are left to read?"
    )
    s = f"{name} reads {p} + 2 x {p} = {3 * p} pages, so {t} - {3 * p} = {t - 3 * p} are left."
    return Problem("pages", q, s, t - 3 * p, {"t": t, "p": p})


def _fence(rng: random.Random) -> Problem:
    length, width, cost = rng.randint(3, 40), rng.randint(2, 30), rng.randint(2, 15)
    q = (
        f"A rectangular garden is {length} m long and {width} m wide. Fencing costs ${cost} per metre. "
        "How many dollars does it cost to fence the whole garden?"
    )
    per = 2 * (length + width)
    s = f"The perimeter is 2 x ({length} + {width}) = {per} m; the fence costs {per} x {cost} = {per * cost}."
    return Problem("fence", q, s, per * cost, {"length": length, "width": width, "cost": cost})


def _minutes(rng: random.Random) -> Problem:
    n, h, m = rng.randint(2, 6), rng.randint(1, 3), rng.randint(1, 59)
    q = f"A festival shows {n} films, each {h} hours and {m} minutes long. How many minutes is that in total?"
    each = 60 * h + m
    s = f"Each film is {h} x 60 + {m} = {each} minutes, so {n} films take {n} x {each} = {n * each} minutes."
    return Problem("minutes", q, s, n * each, {"n": n, "h": h, "m": m})


TEMPLATES = (
    _packs,
    _share,
    _speed,
    _change,
    _ages,
    _times_as_old,
    _savings,
    _discount,
    _bakery,
    _pages,
    _fence,
    _minutes,
)


def generate(n: int, seed: int = SEED) -> list[Problem]:
    """``n`` distinct problems, templates in turn, from one seeded generator: the same list every time."""
    rng, seen, problems = random.Random(seed), set(), []
    while len(problems) < n:
        problem = TEMPLATES[len(problems) % len(TEMPLATES)](rng)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems


def _real_problems() -> list[Record]:
    path = asset_file("forgelm", MATH_FILE)
    records = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            answer = normalize_number(str(row["gold_answer"]))
            meta = {"line": lineno, "kind": "real"}
            records.append(
                Record(row["prompt"].strip(), f"{FINAL} {answer}", "forgelm-grpo-math", answer, meta)
            )
    return records


@cache
def _embedded() -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """All 40 real problems in test, topped up to TEST_SIZE with generated ones; the rest is train."""
    real = _real_problems()
    generated = [
        Record(
            p.question,
            f"{p.solution}\n{FINAL} {p.answer}",
            "generated-arithmetic",
            str(p.answer),
            {"kind": "generated", "template": p.template, "values": p.values},
        )
        for p in generate(N_GENERATED)
    ]
    train, test = split_records(generated, TEST_SIZE - len(real))
    return tuple(train), tuple(real + test)


@TASKS.register()
class GSM8K(Task):
    """Math word problems; the answer is the number after "The final answer is" (or "####" / "Answer:").

    Default: the number after the last final-answer phrase, else the last number in the text, compared
    numerically with the gold answer (commas, "$" and trailing ".0" do not matter). ``strict``: the
    final-answer phrase must be present.
    """

    name = "gsm8k"
    description = "GSM8K grade-school math (stand-in: 40 forgelm problems + generated arithmetic problems)"
    license = "CC-BY-SA-4.0 (forgelm data) + generated; MIT (GSM8K) when loaded by id"
    hub_ids = {key: ("openai/gsm8k", "main") for key in ("gsm8k", "openai/gsm8k", "gsm8k/main")}
    test_size = TEST_SIZE

    def embedded_splits(self) -> tuple[list[Record], list[Record]]:
        train, test = _embedded()
        return list(train), list(test)

    def from_row(self, row: dict, where: str, source: str) -> Record:
        """GSM8K's answer ends in '#### N'; the response ends in 'The final answer is N' instead."""
        question = str(pick_field(row, ("question", "prompt", "instruction"), where, "question")).strip()
        answer = _CALC.sub("", str(pick_field(row, ("answer", "gold_answer", "output"), where, "answer")))
        number = extract_number(answer)
        if number is None:
            raise DataError(f"{where}: no numeric answer in {answer[-80:]!r}")
        body = answer.split("####")[0].strip()
        response = f"{body}\n{FINAL} {number}" if body and body != number else f"{FINAL} {number}"
        return Record(question, response, source, number)

    def extract(self, answer: str) -> str | None:
        return extract_number(answer)

    def is_correct(self, answer: str, record: Record, strict: bool = False) -> bool:
        found = extract_number(answer, strict=strict)
        return found is not None and _value(found) == _value(normalize_number(gold(record)))
