"""Eval items for the routing-benefit benchmark: a loader for evals/*.jsonl and a built-in fallback.

An item is a prompt with a checkable answer. The loader accepts the common spellings
(one JSON object a line):
    prompt | question | input   (or messages: [{role, content}])
    answer | answers | expected | keywords | accept   (a string, a number or a list: any one counts)
    complexity | difficulty | class | kind | category  ("simple"/"easy"/"short" or "complex"/"hard"/"long";
                                                       absent: by prompt length)
    max_tokens (optional)
An answer counts as correct when one accepted string occurs in the output as a whole
word, case-insensitive (greedy answers of small models vary; see ENGINE_NOTES.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

COMPLEX_WORDS = 40  # prompts at least this long count as complex when the item does not say


@dataclass(frozen=True)
class Item:
    prompt: str
    answers: tuple[str, ...]
    complex: bool
    max_tokens: int | None = None
    id: str = ""

    def correct(self, text: str) -> bool:
        text = text.lower()
        return any(re.search(r"(?<!\w)" + re.escape(a.lower()) + r"(?!\w)", text) for a in self.answers)


# Simple: one fact or one small sum. Complex: longer, several steps, one checkable number or word.
_SIMPLE = [
    ("What is the capital of France?", ["Paris"]),
    ("What is the capital of Japan?", ["Tokyo"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("What is the capital of Germany?", ["Berlin"]),
    ("What is the capital of Spain?", ["Madrid"]),
    ("What is the capital of England?", ["London"]),
    ("What is the capital of Russia?", ["Moscow"]),
    ("What is the capital of Egypt?", ["Cairo"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color is grass?", ["green"]),
    ("What color are ripe bananas?", ["yellow"]),
    ("What color is snow?", ["white"]),
    ("What is 2 + 2?", ["4", "four"]),
    ("What is 3 + 5?", ["8", "eight"]),
    ("What is 10 - 3?", ["7", "seven"]),
    ("What is 6 times 2?", ["12", "twelve"]),
    ("How many days are in a week?", ["7", "seven"]),
    ("How many legs does a dog have?", ["4", "four"]),
    ("How many hours are in a day?", ["24", "twenty-four"]),
    ("How many months are in a year?", ["12", "twelve"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of day?", ["night"]),
    ("What animal says moo?", ["cow"]),
    ("What animal barks?", ["dog"]),
    ("What is frozen water called?", ["ice"]),
    ("Which planet do we live on?", ["Earth"]),
    ("What star gives Earth its daylight?", ["Sun"]),
    ("What do bees make?", ["honey"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("Which language is spoken in Mexico?", ["Spanish"]),
    ("What gas do humans need to breathe to live?", ["oxygen"]),
]
_COMPLEX = [
    ("A farmer has 12 cows. He buys 8 more cows and then sells 5 of them at the market. Later a neighbour gives "
     "him 3 cows as a gift. Think step by step about each change to the herd, then give the final number of cows "
     "the farmer has.", ["18", "eighteen"]),
    ("A train leaves a station at 9 in the morning and travels for 3 hours at a steady speed of 60 kilometres per "
     "hour. It then stops, and the passengers get off. Work out step by step how many kilometres the train "
     "travelled in total before it stopped.", ["180"]),
    ("Maria has 5 boxes. Each box holds 6 apples. She eats 4 apples over the weekend and gives 2 apples to her "
     "brother. Explain your reasoning step by step and then state how many apples Maria has left in the boxes.",
     ["24", "twenty-four"]),
    ("Read the following carefully. Paris is the capital of France, Berlin is the capital of Germany, and Madrid "
     "is the capital of Spain. A traveller starts in the capital of Germany, flies to the capital of Spain, and "
     "finally returns home to the capital of France. In which city does the traveller end the trip?", ["Paris"]),
    ("A shop sells pencils at 2 dollars each and notebooks at 5 dollars each. Tom buys 3 pencils and 2 notebooks "
     "and pays with a 20 dollar bill. Work through the prices step by step and tell me how many dollars of change "
     "Tom should receive.", ["4", "four"]),
    ("There are three friends: Anna, Ben and Carl. Anna is taller than Ben. Carl is shorter than Ben. Consider "
     "each comparison in turn and then answer: which of the three friends is the tallest? Give the name of the "
     "friend and explain briefly.", ["Anna"]),
    ("A rectangle is 7 centimetres long and 4 centimetres wide. First recall the formula for the area of a "
     "rectangle, then apply it to these numbers step by step, and finally give the area of the rectangle in square "
     "centimetres.", ["28", "twenty-eight"]),
    ("Water freezes at 0 degrees Celsius and boils at 100 degrees Celsius at sea level. A pot of water is heated "
     "from 20 degrees Celsius until it just starts to boil. Reason step by step and say how many degrees the "
     "temperature of the water rose.", ["80", "eighty"]),
]


def builtin_items() -> list[Item]:
    """40 checkable prompts written for this benchmark: 32 simple, 8 complex."""
    return ([Item(p, tuple(a), False, id=f"builtin-s{i}") for i, (p, a) in enumerate(_SIMPLE)]
            + [Item(p, tuple(a), True, id=f"builtin-c{i}") for i, (p, a) in enumerate(_COMPLEX)])


def _first(d: dict, *keys):
    for k in keys:
        if d.get(k) not in (None, "", []):
            return d[k]
    return None


def parse_item(d: dict, n: int = 0) -> Item | None:
    prompt = _first(d, "prompt", "question", "input", "text")
    if prompt is None and d.get("messages"):
        prompt = "\n".join(m.get("content", "") for m in d["messages"] if m.get("role") == "user")
    answers = _first(d, "answer", "answers", "expected", "keywords", "accept", "target")
    if not prompt or answers is None:
        return None
    answers = answers if isinstance(answers, list) else [answers]
    kind = str(_first(d, "complexity", "difficulty", "class", "kind", "category") or "").lower()
    if any(w in kind for w in ("complex", "hard", "long", "multi")):
        is_complex = True
    elif any(w in kind for w in ("simple", "easy", "short")):
        is_complex = False
    else:
        is_complex = len(str(prompt).split()) >= COMPLEX_WORDS
    mt = d.get("max_tokens")
    return Item(str(prompt), tuple(str(a) for a in answers), is_complex, int(mt) if mt else None,
                str(d.get("id", f"item-{n}")))


def load_items(path: str | Path | None) -> tuple[list[Item], str]:
    """Items from a .jsonl file or every *.jsonl under a folder; the built-in list when none."""
    if path:
        p = Path(path)
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
        items = []
        for f in files:
            for n, line in enumerate(f.read_text().splitlines()):
                if line.strip():
                    item = parse_item(json.loads(line), n)
                    if item:
                        items.append(item)
        if items:
            return items, ", ".join(str(f) for f in files)
        raise SystemExit(f"no usable eval items in {path} (need a prompt and an answer per line)")
    return builtin_items(), "built-in (bench/evalset.py)"
