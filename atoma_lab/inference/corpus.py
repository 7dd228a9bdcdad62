"""Seeded text corpora the engine measures itself on, and that benchmarks and tests share.

* :func:`make_corpus`: mixed texts of 4-120 words from a vocabulary with accents, CJK, Cyrillic,
  emoji and punctuation (the benchmarks' 512-text corpus is ``make_corpus()``).
* :func:`parity_corpus`: what a path's quality is judged on: hand-picked hard cases (empty,
  blank, over-length, several scripts, emoji) followed by seeded mixed texts.
* :func:`retrieval_corpus`: queries and passages on distinct topics, for neighbour overlap.
* :func:`min_cosine`, :func:`top_k_overlap`: the two quality figures of a lossy path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

_WORD_TEXT = (
    "the of and to in is was for on that with as by at from his her an were are which this be "
    "or had not first one their its new after but who they have has been also two all other "
    "time can more would during into only most city used some there state school year may world "
    "between many such where over known these people then three national group high when about "
    "under team part system later what early government made well so each both several through "
    "four while since university number series area history however before including film major "
    "life season club day law century large game second being energy water market model data "
    "network language research science music river church family north south west east house "
    "power embedding vector privacy encryption node proxy server client request response token "
    "sentence quickly beautiful confidential attestation protocol enclave hardware latency "
    "throughput retrieval semantic search passage query document answer question 2024 3.5 GPU "
    "café naïve Zürich München Tokyo 東京 Москва 🚀 😀 e-mail state-of-the-art, (see below). Q&A"
)
_WORDS = _WORD_TEXT.split()

HARD_CASES: tuple[str, ...] = (
    "hello",
    "A quick brown fox jumps over the lazy dog.",
    " leading and trailing spaces ",
    "",
    "   ",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "العربية: الثعلب البني السريع يقفز فوق الكلب الكسول",
    "emoji 🚀🔥👩🏽‍💻 and flags 🇫🇷🇯🇵 in text 😀",
    "code: def f(x): return x ** 2  # comment <tag attr='v'/>",
    "The history of the city " * 40,  # over 256 tokens: truncated
    "Numbers 3.14159 2.71828 1e-10 0xDEADBEEF 42",
)


def make_corpus(n: int = 512, *, seed: int = 20240601, min_words: int = 4,
                max_words: int = 120) -> list[str]:
    """``n`` texts of ``min_words``..``max_words`` words, the same for a given seed."""
    if n < 0 or min_words < 1 or max_words < min_words:
        raise ValueError("need n >= 0 and 1 <= min_words <= max_words")
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))]
        texts.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ""]))
    return texts


def parity_corpus(n: int = 128, *, seed: int = 11) -> list[str]:
    """:data:`HARD_CASES` then seeded mixed texts, ``n`` texts in all (at least the hard cases)."""
    return list(HARD_CASES) + make_corpus(max(0, n - len(HARD_CASES)), seed=seed)


_TOPICS: dict[str, tuple[str, ...]] = {
    "cryptography": ("encryption", "key", "cipher", "nonce", "signature", "hash", "secret",
                     "exchange", "curve", "authenticated"),
    "rivers": ("river", "delta", "flood", "bank", "current", "estuary", "tributary", "water",
               "valley", "sediment"),
    "football": ("goal", "striker", "season", "league", "coach", "penalty", "match", "stadium",
                 "transfer", "defender"),
    "cooking": ("recipe", "oven", "flour", "butter", "simmer", "garlic", "sauce", "bake",
                "pepper", "dough"),
    "astronomy": ("galaxy", "telescope", "orbit", "planet", "comet", "nebula", "star", "gravity",
                  "eclipse", "asteroid"),
    "medicine": ("patient", "vaccine", "dose", "symptom", "clinic", "therapy", "diagnosis",
                 "nurse", "infection", "surgery"),
    "finance": ("market", "interest", "bond", "inflation", "dividend", "loan", "equity",
                "currency", "portfolio", "bank"),
    "music": ("melody", "chord", "guitar", "concert", "rhythm", "album", "orchestra", "singer",
              "tempo", "piano"),
    "computing": ("compiler", "kernel", "thread", "memory", "cache", "processor", "latency",
                  "server", "network", "protocol"),
    "gardening": ("seed", "soil", "compost", "prune", "bloom", "weed", "harvest", "root",
                  "greenhouse", "mulch"),
}
_FILLER = ("the", "a", "of", "and", "in", "with", "for", "on", "about", "how", "why", "new",
           "old", "every", "some", "this", "that", "very", "often", "rarely")


@dataclass(frozen=True, slots=True)
class RetrievalCorpus:
    """Queries and passages; ``topics`` name each passage's topic (for people reading it)."""

    queries: list[str]
    passages: list[str]
    topics: list[str]


def retrieval_corpus(passages_per_topic: int = 30, queries_per_topic: int = 5, *,
                     seed: int = 5) -> RetrievalCorpus:
    """Seeded passages (12-60 words) and short queries (3-8 words) on ten topics, mixed with
    filler words: many near neighbours per query, so top-10 lists are sensitive to small
    changes in the vectors."""
    rng = random.Random(seed)
    queries: list[str] = []
    passages: list[str] = []
    topics: list[str] = []
    for topic, words in _TOPICS.items():
        for _ in range(passages_per_topic):
            n = rng.randint(12, 60)
            text = [rng.choice(words) if rng.random() < 0.45 else rng.choice(_FILLER + tuple(
                _WORDS)) for _ in range(n)]
            passages.append(" ".join(text).capitalize() + ".")
            topics.append(topic)
        for _ in range(queries_per_topic):
            n = rng.randint(3, 8)
            queries.append(" ".join(rng.choice(words) if rng.random() < 0.7
                                    else rng.choice(_FILLER) for _ in range(n)) + "?")
    return RetrievalCorpus(queries, passages, topics)


def min_cosine(got: np.ndarray, ref: np.ndarray) -> float:
    """The smallest row-wise cosine similarity between ``got`` and ``ref``."""
    if got.shape != ref.shape:
        raise ValueError(f"shapes differ: {got.shape} vs {ref.shape}")
    num = (got * ref).sum(axis=1)
    den = np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1)
    return float((num / np.maximum(den, 1e-30)).min())


def top_k_overlap(queries: np.ndarray, passages: np.ndarray, ref_queries: np.ndarray,
                  ref_passages: np.ndarray, *, k: int = 10) -> float:
    """Mean fraction of each query's ``k`` nearest passages (cosine) under the reference
    vectors that are also among its ``k`` nearest under the vectors being judged."""
    if k < 1 or k > passages.shape[0]:
        raise ValueError("k must be between 1 and the number of passages")

    def top(q: np.ndarray, p: np.ndarray) -> np.ndarray:
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        pn = p / np.linalg.norm(p, axis=1, keepdims=True)
        return np.argsort(-(qn @ pn.T), axis=1, kind="stable")[:, :k]

    got, want = top(queries, passages), top(ref_queries, ref_passages)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want, strict=True)]))


__all__ = [
    "HARD_CASES",
    "RetrievalCorpus",
    "make_corpus",
    "min_cosine",
    "parity_corpus",
    "retrieval_corpus",
    "top_k_overlap",
]
