"""Token dictionaries: a growing vocabulary (the ``.dict`` file format itself is ``gpu_matcher.formats``).

The original LSTMVis tools reserve ``<s>`` = 1, ``<unk>`` = 2, ``</s>`` = 3 and number the corpus's tokens
from 4 in order of first appearance; :class:`Vocabulary` does the same, so a dictionary built here lines
up with a model trained on the original tools' output.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import check_token

RESERVED = {1: "<s>", 2: "<unk>", 3: "</s>"}
UNK = "<unk>"
#: Conventional unknown-token spellings, in the order they are looked for (LSTMVis, BERT, others).
UNK_TOKENS = ("<unk>", "[UNK]", "<UNK>", "UNK", "[unk]", "<|unk|>")


def unknown_token(token_to_id: Mapping[str, int]) -> str | None:
    """The dictionary's unknown token: the first of :data:`UNK_TOKENS` it holds, else ``None``."""
    return next((t for t in UNK_TOKENS if t in token_to_id), None)


def as_id_map(dictionary: Mapping[int, str] | Sequence[str], where: str) -> dict[int, str]:
    """A dictionary given as ``{id: token}`` or as a token list (id = position)."""
    if isinstance(dictionary, Mapping):
        try:
            return {int(k): str(v) for k, v in dictionary.items()}
        except (TypeError, ValueError):
            raise ProjectError(f"{where}: dictionary keys must be integer ids") from None
    if isinstance(dictionary, (str, bytes)):
        raise ProjectError(f"{where}: dictionary must be a mapping id -> token or a list of tokens")
    return {i: str(t) for i, t in enumerate(dictionary)}


class Vocabulary:
    """Token <-> id. Grows on unseen tokens unless ``frozen``; a frozen one maps them to ``<unk>``."""

    def __init__(self, tokens: Mapping[int, str] | Sequence[str] | None = None, *,
                 reserved: bool = True, frozen: bool = False, where: str = "vocabulary"):
        self.where = where
        self.id_to_token: dict[int, str] = dict(RESERVED) if (tokens is None and reserved) else {}
        if tokens is not None:
            self.id_to_token = as_id_map(tokens, where)
        self.token_to_id = {tok: idx for idx, tok in self.id_to_token.items()}
        if len(self.token_to_id) != len(self.id_to_token):
            raise ProjectError(f"{where}: a token appears with two ids")
        self.frozen = frozen
        self._next = max(self.id_to_token, default=0) + 1
        self.changed = tokens is None

    def __len__(self) -> int:
        return len(self.id_to_token)

    def id_of(self, token: str, where: str = "") -> int:
        idx = self.token_to_id.get(token)
        if idx is not None:
            return idx
        if self.frozen:
            unk = unknown_token(self.token_to_id)
            if unk is None:
                raise ProjectError(f"{where or self.where}: token {token!r} is not in the dictionary, "
                                   f"which has no {UNK} entry (nor {', '.join(UNK_TOKENS[1:])}) to stand for it")
            return self.token_to_id[unk]
        check_token(token, where or self.where)
        idx = self._next
        self._next += 1
        self.id_to_token[idx] = token
        self.token_to_id[token] = idx
        self.changed = True
        return idx

    def ids(self, tokens: Iterable[str], where: str = "") -> np.ndarray:
        return np.fromiter((self.id_of(t, where) for t in tokens), dtype=np.int64)
