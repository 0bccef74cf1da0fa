"""A NumPy-backed stand-in for the GPU, so the CuPy backend's code paths run in CPU CI.

``StandInDevice`` offers what ``CupyBackend`` asks of ``CudaDevice``: an array module (NumPy whose
``empty`` returns poisoned memory, so an output a kernel forgets to write shows), the kernels by name,
free memory, a release hook and an out-of-memory error. Each kernel is a NumPy reference of its
``kernels/*.cu`` source, called like a ``cupy.RawKernel`` (``kernel(grid, block, args)``); its
arguments are checked against the C signature parsed from the ``.cu`` file (exact scalar types, array
dtypes, contiguity, bounds), so a marshalling mistake fails here before it reaches a GPU.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

import kernels

C_TYPES = {
    "bool": np.bool_, "unsigned char": np.uint8, "int": np.int32, "long long": np.int64,
    "unsigned short": np.uint16, "unsigned int": np.uint32, "unsigned long long": np.uint64,
}
POISON = 0xA5


class StandInOutOfMemory(MemoryError):
    """What the stand-in raises where CuPy would raise ``OutOfMemoryError``."""


class PoisonedNumpy:
    """NumPy, except that ``empty`` fills new arrays with a poison byte pattern, and that ``empty`` and
    ``zeros`` ask the device first (which may refuse, like a full GPU)."""

    def __init__(self, device: "StandInDevice"):
        self._device = device

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float, order="C"):
        self._device.allocate(shape, dtype)
        out = np.empty(shape, dtype=dtype, order=order)
        out.reshape(-1).view(np.uint8)[...] = POISON
        return out

    def zeros(self, shape, dtype=float, order="C"):
        self._device.allocate(shape, dtype)
        return np.zeros(shape, dtype=dtype, order=order)


def _flat(array: np.ndarray, need: int, what: str) -> np.ndarray:
    """A kernel's view of a pointer argument: the array as flat memory, at least ``need`` elements."""
    flat = array.reshape(-1)
    if need > flat.size:
        raise IndexError(f"{what}: reads or writes {need} elements of an array of {flat.size}")
    return flat


# --- NumPy references of kernels/*.cu, argument for argument ---------------------------------------------
def pack_cells(keys, key_stride, threshold, words, word_stride, word_offset, n_words, rows):
    assert key_stride % 32 == 0, "pack_cells: key_stride must be a multiple of 32 (16-byte loads)"
    rows, n_words, key_stride = int(rows), int(n_words), int(key_stride)
    if isinstance(threshold, np.ndarray):                  # pack_cells_rows: one key per row
        threshold = _flat(threshold, rows, "pack_cells_rows thresholds")[:rows]
    else:
        threshold = np.full(rows, threshold)
    k = _flat(keys, (rows - 1) * key_stride + n_words * 32 if rows else 0, "pack_cells keys")
    w = _flat(words, (rows - 1) * int(word_stride) + int(word_offset) + n_words if rows else 0,
              "pack_cells words")
    for r in range(rows):
        seg = k[r * key_stride: r * key_stride + n_words * 32]
        dst = r * int(word_stride) + int(word_offset)
        w[dst: dst + n_words] = np.packbits(seg >= threshold[r], bitorder="little").view("<u4")


def unpack_cells(words, word_stride, cells, n_cells, T, out):
    n_cells, T = int(n_cells), int(T)
    o = _flat(out, n_cells * T, "unpack_cells out")
    flat = words.reshape(-1)
    c = _flat(cells, n_cells, "unpack_cells cells")
    for i in range(n_cells):
        start = int(c[i]) * int(word_stride)
        row = _flat(flat, start + -(-T // 32), "unpack_cells words")[start: start + -(-T // 32)]
        o[i * T:(i + 1) * T] = np.unpackbits(row.view(np.uint8), bitorder="little")[:T].astype(bool)


def pack_steps(on, k, T, words, W):
    k, T, W = int(k), int(T), int(W)
    bits = _flat(on, k * T, "pack_steps on")[:k * T].reshape(k, T)
    w = _flat(words, T * W, "pack_steps words")[:T * W].reshape(T, W)
    for word in range(W):
        acc = np.zeros(T, dtype=np.uint32)
        for j in range(32 * word, min(k, 32 * word + 32)):
            acc |= bits[j].astype(np.uint32) << np.uint32(j - 32 * word)
        w[:, word] = acc


def gather_steps(mask, word_stride, cells, k, T, words, W):
    k, T = int(k), int(T)
    on = np.zeros((k, T), dtype=bool)
    unpack_cells(mask, word_stride, cells, k, T, on)
    pack_steps(on, k, T, words, W)


def step_counts(words, W, T, n):
    W, T = int(W), int(T)
    w = _flat(words, T * W, "step_counts words")[:T * W].reshape(T, W)
    _flat(n, T, "step_counts n")[:T] = np.bitwise_count(w).sum(axis=1, dtype=np.int32)


def level_edges(n, seq_start, has_seq, level, T, flags):
    T = int(T)
    counts = _flat(n, T, "level_edges n")[:T]
    on = counts >= level
    seq = _flat(seq_start, T, "level_edges seq_start")[:T] != 0 if has_seq else np.zeros(T, bool)
    first = on.copy()
    first[1:] &= (counts[:-1] < level) | seq[1:]
    last = on.copy()
    last[:-1] &= (counts[1:] < level) | seq[1:]
    _flat(flags, T, "level_edges flags")[:T] = first.astype(np.uint8) | (last.astype(np.uint8) << 1)


def _candidates(a, b, lo, hi, n_cand, what):
    n_cand = int(n_cand)
    cols = [_flat(x, n_cand, what)[:n_cand].astype(np.int64) for x in (a, b, lo, hi)]
    s, e, l, h = cols
    assert np.all((l <= s) & (s <= e) & (e < h)), f"{what}: candidates need lo <= a <= b < hi"
    return n_cand, s, e + 1, l, h


def inter_counts(words, W, a, b, lo, hi, n_cand, out):
    n_cand, s, e, l, h = _candidates(a, b, lo, hi, n_cand, "inter_counts")
    W = int(W)
    T = words.size // W
    w = words.reshape(-1)[:T * W].reshape(T, W)
    assert n_cand == 0 or int(h.max()) <= T, "inter_counts: a margin reaches past the last step"
    o = _flat(out, n_cand, "inter_counts out")
    for i in range(n_cand):
        run = np.bitwise_and.reduce(w[s[i]:e[i]], axis=0)
        margin = np.bitwise_or.reduce(np.concatenate([w[l[i]:s[i]], w[e[i]:h[i]]]), axis=0) \
            if (s[i] > l[i] or h[i] > e[i]) else np.zeros(W, np.uint32)
        o[i] = int(np.bitwise_count(run & ~margin).sum())


def active_counts(words, word_stride, n_cells, a, b, lo, hi, n_cand, out):
    n_cand, s, e, l, h = _candidates(a, b, lo, hi, n_cand, "active_counts")
    n_cells, word_stride = int(n_cells), int(word_stride)
    flat = _flat(words, n_cells * word_stride, "active_counts words")
    rows = flat[:n_cells * word_stride].reshape(n_cells, word_stride)
    o = _flat(out, n_cand, "active_counts out")
    for i in range(n_cand):
        w0, w1 = l[i] >> 5, ((h[i] - 1) >> 5) + 1
        assert w1 <= word_stride, "active_counts: a margin reaches past the row"
        bits = np.unpackbits(np.ascontiguousarray(rows[:, w0:w1]).view(np.uint8), axis=1,
                             bitorder="little").astype(bool)
        base = w0 * 32
        ok = bits[:, s[i] - base:e[i] - base].all(axis=1)
        ok &= ~bits[:, l[i] - base:s[i] - base].any(axis=1)
        ok &= ~bits[:, e[i] - base:h[i] - base].any(axis=1)
        o[i] += np.int32(ok.sum())                         # atomicAdd: the caller zeroes out


def cell_on_counts(words, word_stride, n_words, n_cells, target, inside, total):
    n_cells, n_words, word_stride = int(n_cells), int(n_words), int(word_stride)
    flat = _flat(words, (n_cells - 1) * word_stride + n_words if n_cells else 0, "cell_on_counts words")
    tgt = _flat(target, n_words, "cell_on_counts target")[:n_words]
    i, t = _flat(inside, n_cells, "cell_on_counts inside"), _flat(total, n_cells, "cell_on_counts total")
    for c in range(n_cells):
        row = flat[c * word_stride: c * word_stride + n_words]
        t[c] = int(np.bitwise_count(row).sum())
        i[c] = int(np.bitwise_count(row & tgt).sum())


REFERENCES = {
    "pack_cells_u16": pack_cells, "pack_cells_u32": pack_cells, "pack_cells_u64": pack_cells,
    "pack_cells_rows_u16": pack_cells, "pack_cells_rows_u32": pack_cells, "pack_cells_rows_u64": pack_cells,
    "gather_steps": gather_steps,
    "unpack_cells": unpack_cells, "pack_steps": pack_steps, "step_counts": step_counts,
    "level_edges": level_edges, "inter_counts": inter_counts, "active_counts": active_counts,
    "cell_on_counts": cell_on_counts,
}


class StandInKernel:
    """A kernel called like ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, name: str, params: list[tuple[str, str]], device: "StandInDevice"):
        self.name, self.params, self.device = name, params, device
        self.reference = REFERENCES[name]

    def __call__(self, grid, block, args):
        grid, block = tuple(grid), tuple(block)
        assert 1 <= len(grid) <= 3 and all(isinstance(g, int) and 1 <= g < 2**31 for g in grid), \
            f"{self.name}: bad grid {grid}"
        assert len(grid) < 2 or all(g <= 65535 for g in grid[1:]), f"{self.name}: grid {grid}"
        assert len(block) == 1 and isinstance(block[0], int) and block[0] % 32 == 0 \
            and 32 <= block[0] <= 1024, f"{self.name}: bad block {block}"
        assert len(args) == len(self.params), \
            f"{self.name}: {len(args)} arguments for {len(self.params)} parameters"
        for (ctype, pname), value in zip(self.params, args):
            base = ctype.replace("const", "").replace("*", "").strip()
            want = np.dtype(C_TYPES[base])
            if ctype.endswith("*"):
                assert isinstance(value, np.ndarray), f"{self.name}({pname}): not an array"
                assert value.dtype == want, f"{self.name}({pname}): dtype {value.dtype}, not {want}"
                assert value.flags.c_contiguous, f"{self.name}({pname}): not C-contiguous"
                assert ctype.startswith("const") or value.flags.writeable, \
                    f"{self.name}({pname}): output is read-only"
            else:
                assert type(value) is want.type, \
                    f"{self.name}({pname}): {type(value).__name__}, not numpy.{want.name}"
        self.device.calls[self.name] += 1
        self.device.maybe_fail(self.name)
        self.reference(*args)


class StandInDevice:
    """What ``CupyBackend`` needs of a device, on NumPy.

    ``free`` is the free memory plans see; ``fail_on(name, times)`` makes the next ``times`` calls of a
    kernel raise the out-of-memory error, and ``fail_allocations(nbytes, times)`` the next ``times``
    allocations (``xp.empty`` / ``xp.zeros``) of at least ``nbytes`` (to exercise the fallbacks).
    """

    oom_errors = (StandInOutOfMemory,)

    def __init__(self, free: int = 1 << 40):
        self.xp = PoisonedNumpy(self)
        self.free = free
        self.calls: Counter = Counter()
        self.releases = 0
        self._fail: Counter = Counter()
        self._fail_alloc: list[int] = []          # [min bytes, remaining]
        sigs = kernels.signatures()
        missing = set(sigs) - set(REFERENCES)
        assert not missing, f"kernels without a stand-in: {sorted(missing)}"
        self.kernels = {name: StandInKernel(name, params, self) for name, params in sigs.items()}

    def fail_on(self, name: str, times: int = 1) -> None:
        self._fail[name] += times

    def maybe_fail(self, name: str) -> None:
        if self._fail[name] > 0:
            self._fail[name] -= 1
            raise StandInOutOfMemory(f"stand-in: out of memory in {name}")

    def fail_allocations(self, nbytes: int, times: int = 1) -> None:
        self._fail_alloc = [int(nbytes), int(times)]

    def allocate(self, shape, dtype) -> None:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if self._fail_alloc and self._fail_alloc[1] > 0 and nbytes >= self._fail_alloc[0]:
            self._fail_alloc[1] -= 1
            raise StandInOutOfMemory(f"stand-in: out of memory allocating {nbytes} bytes")

    def free_bytes(self) -> int:
        return int(self.free)

    def release(self) -> None:
        self.releases += 1

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def describe(self) -> str:
        return "NumPy stand-in device"
