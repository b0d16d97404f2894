"""Regenerate evals/golden.jsonl: QARR's golden set, written for this project.

    python evals/build_golden.py   # deterministic: same file every run

Hand-written facts (capitals, simple facts, multiple choice, one-word answers)
plus generated arithmetic and unit conversions. Easy on purpose: the bundled
135M model must score measurably above zero, so that a broken quantization
shows as a drop. Each item: id, category, prompt, answer, scoring
(exact | contains | numeric | choice), optional aliases, choices, tolerance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("the United Kingdom", "London"), ("Egypt", "Cairo"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("the Czech Republic", "Prague"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"),
    ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Kenya", "Nairobi"), ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"), ("India", "New Delhi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("Vietnam", "Hanoi"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Turkey", "Ankara"), ("Australia", "Canberra"),
    ("New Zealand", "Wellington"), ("Cuba", "Havana"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"),
    ("Switzerland", "Bern"), ("Saudi Arabia", "Riyadh"), ("Nigeria", "Abuja"), ("Ethiopia", "Addis Ababa"),
    ("the United States", "Washington"), ("Brazil", "Brasilia"), ("Morocco", "Rabat"),
]
ALIASES = {"Kyiv": ["Kiev"], "Bogota": ["Bogotá"], "Brasilia": ["Brasília"], "Beijing": ["Peking"]}

# (prompt, answer, aliases) scored by `contains`
FACTS = [
    ("What color is the sky on a clear day?", "blue", []),
    ("What color is grass?", "green", []),
    ("What color is snow?", "white", []),
    ("What color are ripe bananas?", "yellow", []),
    ("What is the largest planet in our solar system?", "Jupiter", []),
    ("Which planet is known as the Red Planet?", "Mars", []),
    ("What star is at the center of our solar system?", "Sun", []),
    ("What is the natural satellite of the Earth called?", "Moon", []),
    ("What gas do plants absorb from the air?", "carbon dioxide", ["CO2"]),
    ("What do bees make?", "honey", []),
    ("What is frozen water called?", "ice", []),
    ("What is the chemical symbol for water?", "H2O", []),
    ("What is the chemical symbol for gold?", "Au", []),
    ("Which animal is known as the king of the jungle?", "lion", []),
    ("What is the largest ocean on Earth?", "Pacific", []),
    ("What is the longest river in Africa?", "Nile", []),
    ("Who wrote Romeo and Juliet?", "Shakespeare", []),
    ("Who painted the Mona Lisa?", "Leonardo", ["da Vinci"]),
    ("What language is spoken in Brazil?", "Portuguese", []),
    ("What language is mainly spoken in Mexico?", "Spanish", []),
    ("What is the tallest mountain in the world?", "Everest", []),
    ("What is the largest desert in Africa?", "Sahara", []),
    ("What is the first letter of the English alphabet?", "A", []),
    ("Which season comes after winter?", "spring", []),
    ("Which season comes after summer?", "autumn", ["fall"]),
    ("Which day comes after Monday?", "Tuesday", []),
    ("Which day comes after Friday?", "Saturday", []),
    ("Which month comes after January?", "February", []),
    ("Which month comes before December?", "November", []),
    ("What is the opposite of hot?", "cold", []),
    ("What is the opposite of up?", "down", []),
    ("What is the opposite of day?", "night", []),
    ("What is the opposite of big?", "small", ["little"]),
    ("What animal says moo?", "cow", []),
    ("What animal barks?", "dog", []),
    ("What animal meows?", "cat", []),
    ("What do you call a baby dog?", "puppy", []),
    ("What do you call a baby cat?", "kitten", []),
    ("What is the main ingredient of bread?", "flour", ["wheat"]),
    ("What metal is a common electrical wire made of?", "copper", []),
    ("What organ pumps blood through the body?", "heart", []),
    ("What organ do humans use to breathe?", "lungs", ["lung"]),
    ("What do we call the frozen form of rain?", "snow", ["hail"]),
    ("Which continent is Egypt in?", "Africa", []),
    ("Which continent is France in?", "Europe", []),
    ("Which continent is Japan in?", "Asia", []),
    ("What is the currency of Japan?", "yen", []),
    ("What is the currency of the United Kingdom?", "pound", []),
    ("In which country are the pyramids of Giza?", "Egypt", []),
    ("In which city is the Eiffel Tower?", "Paris", []),
]

# (prompt, answer) scored by `numeric`
NUMERIC_FACTS = [
    ("How many legs does a spider have?", 8), ("How many legs does a dog have?", 4),
    ("How many days are in a week?", 7), ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24), ("How many minutes are in an hour?", 60),
    ("How many continents are there on Earth?", 7), ("How many sides does a triangle have?", 3),
    ("How many sides does a hexagon have?", 6), ("How many sides does a square have?", 4),
    ("How many planets are in our solar system?", 8), ("How many wheels does a bicycle have?", 2),
    ("At what temperature in degrees Celsius does water freeze?", 0),
    ("At what temperature in degrees Celsius does water boil at sea level?", 100),
    ("How many letters are in the English alphabet?", 26), ("How many days are in a leap year?", 366),
    ("How many seconds are in a minute?", 60), ("How many years are in a century?", 100),
    ("How many players are on a soccer team on the field?", 11), ("How many strings does a standard guitar have?", 6),
]

# (prompt, answer, aliases) scored by `exact` on the normalised first line
EXACT = [
    ("Reply with only the word yes.", "yes", []),
    ("Reply with only the word no.", "no", []),
    ("Repeat this word exactly: apple", "apple", []),
    ("Repeat this word exactly: banana", "banana", []),
    ("Repeat this word exactly: orange", "orange", []),
    ("Repeat this word exactly: river", "river", []),
    ("Repeat this word exactly: mountain", "mountain", []),
    ("Repeat this word exactly: window", "window", []),
    ("Repeat this word exactly: garden", "garden", []),
    ("Repeat this word exactly: planet", "planet", []),
    ("Write the word hello in lowercase letters, nothing else.", "hello", []),
    ("Write the word cat in capital letters, nothing else.", "CAT", []),
    ("Is the Earth round? Answer yes or no only.", "yes", []),
    ("Is fire cold? Answer yes or no only.", "no", []),
    ("Is water wet? Answer yes or no only.", "yes", []),
    ("Can fish swim? Answer yes or no only.", "yes", []),
    ("Do cows fly? Answer yes or no only.", "no", []),
    ("Is the sun hot? Answer yes or no only.", "yes", []),
    ("Is ice hot? Answer yes or no only.", "no", []),
    ("Is 10 greater than 3? Answer yes or no only.", "yes", []),
    ("Is 2 greater than 9? Answer yes or no only.", "no", []),
    ("Is Paris in France? Answer yes or no only.", "yes", []),
    ("Is Tokyo in Brazil? Answer yes or no only.", "no", []),
    ("Do birds have feathers? Answer yes or no only.", "yes", []),
    ("Is a tomato blue? Answer yes or no only.", "no", []),
]

# (question, choices, correct index) scored by `choice`
CHOICE = [
    ("What is the capital of France?", ["Paris", "Berlin", "Rome", "Madrid"], 0),
    ("Which animal is a mammal?", ["Shark", "Dog", "Eagle", "Frog"], 1),
    ("What color is the sky on a clear day?", ["Red", "Green", "Blue", "Black"], 2),
    ("How many days are in a week?", ["5", "6", "7", "8"], 2),
    ("Which planet do we live on?", ["Mars", "Earth", "Venus", "Saturn"], 1),
    ("What is 2 + 2?", ["3", "4", "5", "6"], 1),
    ("Which of these is a fruit?", ["Carrot", "Potato", "Apple", "Onion"], 2),
    ("What do cows drink most?", ["Water", "Milk", "Juice", "Tea"], 0),
    ("Which is the largest ocean?", ["Atlantic", "Indian", "Arctic", "Pacific"], 3),
    ("What is frozen water?", ["Steam", "Ice", "Sand", "Glass"], 1),
    ("Which season is the coldest?", ["Summer", "Spring", "Winter", "Autumn"], 2),
    ("Which of these can fly?", ["Bird", "Fish", "Horse", "Snake"], 0),
    ("What is the capital of Japan?", ["Seoul", "Beijing", "Tokyo", "Bangkok"], 2),
    ("What is the capital of Italy?", ["Rome", "Milan", "Naples", "Venice"], 0),
    ("What is the capital of Germany?", ["Munich", "Berlin", "Hamburg", "Vienna"], 1),
    ("Which is a primary color?", ["Red", "Pink", "Brown", "Grey"], 0),
    ("How many legs does a cat have?", ["2", "4", "6", "8"], 1),
    ("What do bees make?", ["Milk", "Honey", "Silk", "Wool"], 1),
    ("Which is the opposite of hot?", ["Warm", "Cold", "Big", "Fast"], 1),
    ("What is 10 - 3?", ["6", "7", "8", "9"], 1),
    ("What is 3 x 3?", ["6", "8", "9", "12"], 2),
    ("Which gas do humans need to breathe?", ["Oxygen", "Helium", "Neon", "Argon"], 0),
    ("Which star is closest to the Earth?", ["Sirius", "Polaris", "The Sun", "Vega"], 2),
    ("Which of these is a vegetable?", ["Banana", "Carrot", "Cherry", "Grape"], 1),
    ("Who wrote Hamlet?", ["Dickens", "Shakespeare", "Tolstoy", "Homer"], 1),
    ("What is the boiling point of water in Celsius?", ["50", "90", "100", "212"], 2),
    ("Which continent is Brazil in?", ["Africa", "Europe", "Asia", "South America"], 3),
    ("Which animal says woof?", ["Cat", "Dog", "Cow", "Duck"], 1),
    ("Which month has the fewest days?", ["January", "February", "March", "April"], 1),
    ("What shape has three sides?", ["Square", "Circle", "Triangle", "Pentagon"], 2),
    ("What is the largest planet?", ["Earth", "Mars", "Jupiter", "Mercury"], 2),
    ("Which of these is a metal?", ["Wood", "Iron", "Paper", "Glass"], 1),
    ("What do plants need for photosynthesis?", ["Sunlight", "Salt", "Sugar", "Plastic"], 0),
    ("Which is the tallest animal?", ["Elephant", "Giraffe", "Horse", "Lion"], 1),
    ("What is the capital of Spain?", ["Lisbon", "Barcelona", "Madrid", "Seville"], 2),
    ("Which language is spoken in France?", ["French", "German", "Spanish", "Italian"], 0),
    ("What is 5 + 5?", ["10", "11", "12", "15"], 0),
    ("Which is the fastest land animal?", ["Cheetah", "Turtle", "Cow", "Sheep"], 0),
    ("What is the capital of the United Kingdom?", ["Paris", "London", "Dublin", "Edinburgh"], 1),
    ("How many hours are in a day?", ["12", "20", "24", "30"], 2),
]

LETTERS = "ABCD"


def arithmetic(rng: random.Random) -> list[dict]:
    items: list[dict] = []
    seen: set[str] = set()
    ops = [("+", lambda a, b: a + b, (1, 20)), ("-", lambda a, b: a - b, (1, 30)), ("*", lambda a, b: a * b, (2, 12))]
    while len(items) < 90:
        sym, fn, (lo, hi) = ops[len(items) % 3]
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if sym == "-" and b > a:
            a, b = b, a
        answer = fn(a, b)
        prompt = f"What is {a} {sym} {b}?"
        # Numeric scoring skips numbers echoed from the prompt, so the answer must not be one.
        if prompt in seen or answer in (a, b):
            continue
        seen.add(prompt)
        items.append({"category": "arithmetic", "prompt": prompt, "answer": str(answer), "scoring": "numeric"})
    return items


def conversions(rng: random.Random) -> list[dict]:
    units = [
        ("centimeters", "meters", 100), ("millimeters", "centimeters", 10), ("meters", "kilometers", 1000),
        ("grams", "kilograms", 1000), ("minutes", "hours", 60), ("seconds", "minutes", 60),
        ("hours", "days", 24), ("days", "weeks", 7), ("months", "years", 12), ("milliliters", "liters", 1000),
    ]
    items = []
    for small, big, factor in units:
        for n in rng.sample(range(2, 10), 4):
            items.append({"category": "units", "prompt": f"How many {small} are in {n} {big}?",
                          "answer": str(n * factor), "scoring": "numeric"})
    return items


def build() -> list[dict]:
    rng = random.Random(20261123)
    groups: dict[str, list[dict]] = {
        "arithmetic": arithmetic(rng),
        "capitals": [{"category": "capitals", "prompt": f"What is the capital of {c}?", "answer": cap,
                      "scoring": "contains", **({"aliases": ALIASES[cap]} if cap in ALIASES else {})}
                     for c, cap in CAPITALS],
        "units": conversions(rng),
        "facts": [{"category": "facts", "prompt": p, "answer": a, "scoring": "contains",
                   **({"aliases": al} if al else {})} for p, a, al in FACTS]
        + [{"category": "facts", "prompt": p, "answer": str(a), "scoring": "numeric"} for p, a in NUMERIC_FACTS],
        "exact": [{"category": "exact", "prompt": p, "answer": a, "scoring": "exact"} for p, a, _ in EXACT],
        "choice": [],
    }
    for q, choices, idx in CHOICE:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        groups["choice"].append({
            "category": "choice",
            "prompt": f"{q}\n{options}\nAnswer with the letter of the correct option.",
            "answer": LETTERS[idx], "choices": choices, "scoring": "choice"})
    out = []
    for name, items in groups.items():
        for i, item in enumerate(items, 1):
            out.append({"id": f"{name}-{i:03d}", **item})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("golden.jsonl")
    items = build()
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items))
    print(f"{path}: {len(items)} items")
