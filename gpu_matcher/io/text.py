"""``lstmvis convert-text``: a text file, one sequence per line, to the word-id timeline.

Writes ``train.h5`` (``words``: 1-D token ids, ``seq_starts``: where each line starts) and
``words.dict``, the files that a project's ``word_sequence`` and ``sequences`` keys name
(``../shared/DATA_FORMAT.md``). The file is read line by line and written in blocks, so its size is
not limited by memory. ``gpu_matcher.extract`` reads the same folder as its corpus.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import read_dictionary, write_dictionary
from gpu_matcher.io.vocab import UNK_TOKENS, Vocabulary, unknown_token

TEXT_FILE, DICT_FILE = "train.h5", "words.dict"
BLOCK = 1 << 16
LEVELS = ("word", "char")

LSTM_YML_HINT = """\
files:
  train: train.h5
  words: words.dict
word_sequence: {file: train, path: words, dict_file: words}
sequences: {file: train, path: seq_starts}"""


@dataclass
class TextSummary:
    folder: Path
    tokens: int
    sequences: int
    vocabulary: int
    skipped_empty: int
    unknown: int


def convert_text(text_path: str | os.PathLike, out: str | os.PathLike, *, level: str = "word",
                 dictionary: str | os.PathLike | None = None, eos: bool = False, lowercase: bool = False,
                 overwrite: bool = False, encoding: str = "utf-8") -> TextSummary:
    """Convert ``text_path`` (one sequence per line; ``word``: split on white space, ``char``: every
    character a token) into ``out/train.h5`` and ``out/words.dict``.

    ``dictionary``: an existing ``.dict`` (say, your model's vocabulary); tokens not in it become its
    unknown token (``<unk>``, or BERT's ``[UNK]``: the first of ``UNK_TOKENS`` it holds). Without one,
    ids follow the original tools: ``<s>``=1, ``<unk>``=2, ``</s>``=3, then the corpus's tokens in order of first appearance. ``eos`` ends every sequence with ``</s>``. Empty lines
    are skipped (a sequence has at least one token).
    """
    text_path, folder = Path(text_path), Path(out)
    if level not in LEVELS:
        raise ProjectError(f"level {level!r}: expected one of {LEVELS}")
    if not text_path.is_file():
        raise ProjectError(f"{text_path}: text file missing")
    if dictionary is not None:
        dict_path = Path(dictionary)
        if not dict_path.is_file():
            raise ProjectError(f"{dict_path}: dictionary file missing")
        vocab = Vocabulary(read_dictionary(dict_path), frozen=True, where=str(dict_path))
        if unknown_token(vocab.token_to_id) is None:
            raise ProjectError(f"{dict_path}: has no unknown token to stand for words it lacks "
                               f"(looked for {', '.join(UNK_TOKENS)})")
        if eos and "</s>" not in vocab.token_to_id:
            raise ProjectError(f"{dict_path}: --eos asks for </s>, which the dictionary lacks")
    else:
        vocab = Vocabulary(where=str(text_path))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
    h5_path = folder / TEXT_FILE
    if h5_path.exists() and not overwrite:
        raise ProjectError(f"{h5_path}: exists; pass --overwrite to replace it")
    unk = unknown_token(vocab.token_to_id)
    unk_id = vocab.token_to_id.get(unk) if unk is not None else None
    ids_buf: list[int] = []
    starts_buf: list[int] = []
    total = sequences = skipped = unknown = 0
    tmp = folder / (TEXT_FILE + ".tmp")
    with h5py.File(tmp, "w") as handle:
        words = handle.create_dataset("words", shape=(0,), maxshape=(None,), dtype=np.int32,
                                      chunks=(BLOCK,))
        starts = handle.create_dataset("seq_starts", shape=(0,), maxshape=(None,), dtype=np.int64,
                                       chunks=(BLOCK,))

        def flush() -> None:
            for ds, buf in ((words, ids_buf), (starts, starts_buf)):
                if buf:
                    n = ds.shape[0]
                    ds.resize(n + len(buf), axis=0)
                    ds[n:] = buf
                    buf.clear()

        try:
            with open(text_path, encoding=encoding, newline="") as fh:
                for lineno, line in enumerate(fh, 1):
                    line = line.rstrip("\r\n")
                    if lowercase:
                        line = line.lower()
                    tokens = line.split() if level == "word" else list(line)
                    if not tokens or (level == "char" and not line.strip()):
                        skipped += 1
                        continue
                    where = f"{text_path}:{lineno}"
                    line_ids = [vocab.id_of(t, where) for t in tokens]
                    if eos:
                        line_ids.append(vocab.id_of("</s>", where))
                    if unk_id is not None and dictionary is not None:
                        unknown += sum(1 for i, t in zip(line_ids, tokens) if i == unk_id and t != unk)
                    starts_buf.append(total)
                    ids_buf.extend(line_ids)
                    total += len(line_ids)
                    sequences += 1
                    if len(ids_buf) >= BLOCK:
                        flush()
        except UnicodeDecodeError as exc:
            raise ProjectError(f"{text_path}: not {encoding} text ({exc.reason} at byte {exc.start} of a "
                               "line); pass --encoding") from None
        flush()
    if total == 0:
        tmp.unlink()
        raise ProjectError(f"{text_path}: no tokens (every line is empty)")
    os.replace(tmp, h5_path)
    write_dictionary(folder / DICT_FILE, vocab.id_to_token)
    return TextSummary(folder=folder, tokens=total, sequences=sequences, vocabulary=len(vocab),
                       skipped_empty=skipped, unknown=unknown)


@dataclass
class Corpus:
    """Token ids of a timeline, where its sequences start, and the dictionary (id -> token)."""

    ids: np.ndarray
    starts: np.ndarray
    dictionary: dict[int, str] | None = None

    @classmethod
    def from_sequences(cls, sequences, dictionary: dict[int, str] | None = None) -> "Corpus":
        arrays = [np.asarray(s, dtype=np.int64).ravel() for s in sequences]
        empty = [i for i, a in enumerate(arrays) if a.size == 0]
        if empty:
            raise ProjectError(f"corpus: sequence {empty[0]} is empty; every sequence needs a token")
        if not arrays:
            raise ProjectError("corpus: no sequences")
        lengths = np.array([a.size for a in arrays])
        return cls(ids=np.concatenate(arrays), starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                   dictionary=dictionary)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "Corpus":
        """What :func:`convert_text` wrote (``train.h5`` and ``words.dict``)."""
        folder = Path(folder)
        h5_path = folder / TEXT_FILE
        if not h5_path.is_file():
            raise ProjectError(f"{h5_path}: file missing (write it with lstmvis convert-text)")
        with h5py.File(h5_path, "r") as handle:
            for key in ("words", "seq_starts"):
                if key not in handle:
                    raise ProjectError(f"{h5_path}: dataset {key!r} missing")
            ids = np.asarray(handle["words"][()], dtype=np.int64)
            starts = np.asarray(handle["seq_starts"][()], dtype=np.int64)
        if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= max(1, ids.size):
            raise ProjectError(f"{h5_path}: dataset 'seq_starts' must start at 0 and increase strictly "
                               f"below {ids.size}")
        dict_path = folder / DICT_FILE
        return cls(ids=ids, starts=starts,
                   dictionary=read_dictionary(dict_path) if dict_path.is_file() else None)

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.append(self.starts, self.ids.size))

    def sequence(self, i: int) -> np.ndarray:
        end = self.starts[i + 1] if i + 1 < self.starts.size else self.ids.size
        return self.ids[self.starts[i]:end]
