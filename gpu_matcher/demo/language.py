"""The counting language of the LSTMVis paper (section 6.1).

Alphabet ``( ) 0 1 2 3 4``: balanced parentheses nested at most 4 deep, and every digit equals the
nesting depth at its position, e.g. ``0 ( 1 1 ( 2 ( 3 ( 4 4 ) 3 ) ) 1 ) 0``. A sequence is a random
walk: at depth ``d`` it opens a parenthesis, closes one or writes the digit ``d``; at depth 0 it may end
(the language model predicts that as ``</s>``). A digit is fully determined by what came before, which
makes it the test of whether a model counts.
"""

from __future__ import annotations

import numpy as np

#: Model vocabulary, index = token id (also the ids in the demo's words.dict).
TOKENS = ("(", ")", "0", "1", "2", "3", "4", "</s>")
OPEN, CLOSE, EOS = 0, 1, 7
DIGIT0 = 2                                  # id of "0"; digit k has id DIGIT0 + k
MAX_DEPTH = 4
#: The walk's choice weights at a depth where every move is allowed; P_END is the chance to stop at
#: depth 0 once a sentence has MIN_LENGTH tokens.
P_OPEN, P_CLOSE, P_END = 0.30, 0.25, 0.20
MIN_LENGTH, MAX_LENGTH = 12, 100


def next_distribution(depth: int, n: int) -> np.ndarray:
    """The true probabilities of the next token (over ``TOKENS``) after ``n`` tokens at ``depth``."""
    p = np.zeros(len(TOKENS))
    if n >= MAX_LENGTH:                         # past the length limit: wind down to depth 0 and end
        if depth == 0:
            p[EOS] = 1.0
        else:
            p[CLOSE], p[DIGIT0 + depth] = 0.7, 0.3
        return p
    p[DIGIT0 + depth] = 1.0 - P_OPEN - P_CLOSE
    if depth < MAX_DEPTH:
        p[OPEN] = P_OPEN
    if depth > 0:
        p[CLOSE] = P_CLOSE
    p /= p.sum()
    if depth == 0 and n >= MIN_LENGTH:
        p *= 1.0 - P_END
        p[EOS] = P_END
    return p


def sample_sequence(rng: np.random.Generator) -> np.ndarray:
    """One sentence of the language as token ids (no ``</s>``)."""
    depth, out = 0, []
    while True:
        cumulative = np.cumsum(next_distribution(depth, len(out)))
        token = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")),
                    len(TOKENS) - 1)
        if token == EOS:
            return np.asarray(out, dtype=np.int64)
        depth += (token == OPEN) - (token == CLOSE)
        out.append(token)


def sample_corpus(rng: np.random.Generator, steps: int) -> list[np.ndarray]:
    """Sentences until at least ``steps`` tokens."""
    sentences, total = [], 0
    while total < steps:
        sentences.append(sample_sequence(rng))
        total += len(sentences[-1])
    return sentences


def depths(ids: np.ndarray) -> np.ndarray:
    """Nesting depth after reading each token (an opening parenthesis counts as inside)."""
    ids = np.asarray(ids)
    return np.cumsum((ids == OPEN).astype(np.int64) - (ids == CLOSE).astype(np.int64))


def is_valid(ids: np.ndarray) -> bool:
    """Whether ``ids`` is a sentence of the language."""
    d = depths(ids)
    digits = (ids >= DIGIT0) & (ids < DIGIT0 + MAX_DEPTH + 1)
    return bool(len(ids) and d.min() >= 0 and d.max() <= MAX_DEPTH and d[-1] == 0
                and np.all((ids[digits] - DIGIT0) == d[digits]) and np.all(ids != EOS))


def depths_of_sentences(sentences: list[np.ndarray]) -> np.ndarray:
    """:func:`depths` of each sentence, concatenated (each sentence starts at depth 0)."""
    if not sentences:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([depths(s) for s in sentences])
