#!/usr/bin/env python3
"""Writes the benchmark corpus: 512 English sentences of 10-40 words, one per line.

    python3 bench/make_corpus.py OUT_FILE [--count 512] [--seed 20261124]

Deterministic: a fixed seed drives a small 64-bit generator of our own (no dependence on the
`random` module's algorithms), so every machine and Python version writes the same bytes. Both
sides of bench/run.sh read the file this writes. Standard library only.
"""

import argparse
import hashlib

MASK64 = (1 << 64) - 1

DETERMINERS = ["the", "a", "every", "one", "this", "that", "our", "their", "some", "no"]
ADJECTIVES = [
    "quiet", "bright", "old", "small", "large", "careful", "busy", "cold", "warm", "early",
    "late", "green", "heavy", "simple", "strange", "patient", "narrow", "open", "local", "new",
    "ancient", "modern", "gentle", "sharp", "hidden", "famous", "empty", "crowded", "wooden",
    "northern",
]
NOUNS = [
    "river", "teacher", "engine", "village", "market", "garden", "library", "student", "doctor",
    "train", "mountain", "kitchen", "window", "bridge", "farmer", "computer", "letter", "storm",
    "museum", "harbor", "painter", "forest", "council", "recipe", "company", "island", "report",
    "musician", "station", "festival", "neighbor", "factory", "journey", "question", "network",
    "lantern", "committee", "orchard", "telescope", "bakery",
]
VERBS = [
    "visited", "repaired", "described", "followed", "opened", "watched", "measured", "carried",
    "painted", "explained", "found", "built", "closed", "studied", "moved", "cleaned", "answered",
    "ignored", "photographed", "remembered", "delivered", "borrowed", "designed", "inspected",
]
ADVERBS = [
    "slowly", "quickly", "carefully", "again", "yesterday", "quietly", "finally", "happily",
    "rarely", "suddenly", "together", "early",
]
PREPOSITIONS = ["near", "behind", "under", "across", "beside", "inside", "beyond", "along", "after"]
CONJUNCTIONS = ["and", "but", "while", "because", "although", "so", "before", "after"]


class Generator:
    """splitmix64: a tiny, well-known 64-bit generator, written out so the output never changes."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def pick(self, words: list) -> str:
        return words[self.below(len(words))]


def noun_phrase(rng: Generator) -> list:
    words = [rng.pick(DETERMINERS)]
    for _ in range(rng.below(3)):
        words.append(rng.pick(ADJECTIVES))
    words.append(rng.pick(NOUNS))
    return words


def clause(rng: Generator) -> list:
    words = noun_phrase(rng) + [rng.pick(VERBS)] + noun_phrase(rng)
    if rng.below(2):
        words += [rng.pick(PREPOSITIONS)] + noun_phrase(rng)
    if rng.below(3) == 0:
        words.append(rng.pick(ADVERBS))
    return words


def sentence(rng: Generator, min_words: int, max_words: int) -> str:
    target = min_words + rng.below(max_words - min_words + 1)
    words = clause(rng)
    while len(words) < target:
        words += [rng.pick(CONJUNCTIONS)] + clause(rng)
    words = words[:target]
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--min-words", type=int, default=10)
    parser.add_argument("--max-words", type=int, default=40)
    args = parser.parse_args()
    rng = Generator(args.seed)
    lines = [sentence(rng, args.min_words, args.max_words) for _ in range(args.count)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(args.out, "wb") as out:
        out.write(data)
    print(f"{args.out}: {args.count} sentences, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
