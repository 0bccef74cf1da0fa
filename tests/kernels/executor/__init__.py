"""Run the real ``kernels/*.cu`` on the CPU: each file compiled unmodified by g++ (``cuda_shim.h``
supplies the CUDA built-ins), every CUDA thread a fiber of ``runtime.cpp``, called like a
``cupy.RawKernel``: ``kernel(grid, block, args)``.

Each launch runs several times: forward, reversed and shuffled schedules (blocks, warps and lanes),
and with two poison patterns in the pure outputs; every run must give the same bytes, so an order
dependence or an output element the kernel never writes fails the launch. Every array argument gets its
own exact-size buffer (guard bytes around it, checked after the launch, unless AddressSanitizer is
on, which then sees any overrun of that argument).

``CUEMU_SANITIZE`` picks the build: unset (plain ``-O1``), ``address`` (ASan + UBSan; Python must run
with libasan preloaded) or ``thread`` (TSan: each launch runs in a small runner executable, all blocks
at once, one schedule). Builds go to ``$CUEMU_CACHE`` (default ``~/.cache/lstmvis-cuemu``), keyed by
the hash of every source and flag.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import kernels

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
SHIM = HERE / "cuda_shim.h"
RUNTIME = HERE / "runtime.cpp"
RUNNER = HERE / "runner.cpp"

C_TYPES: dict[str, Any] = {
    "bool": np.bool_, "unsigned char": np.uint8, "char": np.int8, "signed char": np.int8,
    "short": np.int16, "unsigned short": np.uint16, "int": np.int32, "unsigned int": np.uint32,
    "long long": np.int64, "unsigned long long": np.uint64, "float": np.float32, "double": np.float64,
}
#: Pointer arguments a kernel reads as well as writes, so they keep the caller's contents (no poison).
KEEPS = {
    ("active_counts", "out"): "each 32-cell group adds to it; the caller zeroes it",
    ("pack_cells_u16", "words"): "only words [word_offset, word_offset + n_words) of each row",
    ("pack_cells_u32", "words"): "only words [word_offset, word_offset + n_words) of each row",
    ("pack_cells_u64", "words"): "only words [word_offset, word_offset + n_words) of each row",
    ("pack_cells_rows_u16", "words"): "only words [word_offset, word_offset + n_words) of each row",
    ("pack_cells_rows_u32", "words"): "only words [word_offset, word_offset + n_words) of each row",
    ("pack_cells_rows_u64", "words"): "only words [word_offset, word_offset + n_words) of each row",
    ("atomic_add", "out"): "tests/kernels/faulty.cu: adds to it",
    ("racy_add", "out"): "tests/kernels/faulty.cu: adds to it",
}
POISONS = (0xA5, 0x5A)
#: (name, order, seed, poison index): forward twice with two poisons (unwritten elements), then
#: reversed and shuffled (order dependence).
SCHEDULES = (("forward", 0, 0, 0), ("forward/poison 2", 0, 0, 1), ("reversed", 1, 0, 0),
             ("shuffled", 2, 12345, 0))
GUARD = 64
MAX_TSAN_THREADS = 256
STACK = {"": 64 << 10, "address": 512 << 10, "thread": 256 << 10}
FLAGS = {
    "": ["-O1"],
    "address": ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer"],
    "thread": ["-O1", "-fsanitize=thread"],
}
_lock = threading.Lock()
_modules: dict[tuple[str, str], "Module"] = {}


class LaunchError(AssertionError):
    """A launch broke a rule the executor checks (warp intrinsics, schedules, poison, guards)."""


def unavailable_reason() -> str | None:
    """Why kernels cannot be executed here, or None."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "g++ not found: the CUDA kernels cannot be compiled for the CPU executor"
    return None


def sanitize_mode() -> str:
    mode = os.environ.get("CUEMU_SANITIZE", "").strip()
    if mode not in FLAGS:
        raise ValueError(f"CUEMU_SANITIZE={mode!r}: use '', 'address' or 'thread'")
    return mode


def cache_dir() -> Path:
    return Path(os.environ.get("CUEMU_CACHE") or Path.home() / ".cache" / "lstmvis-cuemu")


def _rel(path: Path) -> str:
    """The name __FILE__ gives in messages: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(Path(path).resolve())


def _entries_source(sigs: dict[str, list[tuple[str, str]]]) -> str:
    """C++ of one ``cuemu_entry_<kernel>(void **args)`` per kernel, and the table the runner uses."""
    lines = ['#include "cuda_shim.h"', "extern \"C\" {"]
    for name, params in sigs.items():
        types = [ctype for ctype, _ in params]
        lines.append(f"void {name}({', '.join(types)});")
        call = ", ".join(f"*({t}*)a[{i}]" for i, t in enumerate(types))
        lines.append(f"void cuemu_entry_{name}(void** a) {{ {name}({call}); }}")
    lines.append("struct CuemuKernel { const char* name; void (*fn)(void**); };")
    table = ", ".join(f'{{"{n}", cuemu_entry_{n}}}' for n in sigs)
    lines.append(f"extern const CuemuKernel cuemu_kernels[] = {{{table}{', ' if table else ''}{{0, 0}}}};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _compile(jobs: list[list[str]]) -> None:
    procs = [(cmd, subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)) for cmd in jobs]
    for cmd, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"g++ failed ({' '.join(cmd)}):\n{out}")


def build(path: Path, mode: str) -> Path:
    """The shared library (or, for ``thread``, the runner executable) of one ``.cu`` file, built once
    into the cache and reused while no source or flag changes."""
    path = Path(path).resolve()
    sigs = kernels.signatures(path)
    entries = _entries_source(sigs)
    cxx = os.environ.get("CXX", "g++")
    flags = FLAGS[mode]
    digest = hashlib.sha256()
    for part in (path.read_bytes(), SHIM.read_bytes(), RUNTIME.read_bytes(), RUNNER.read_bytes(),
                 entries.encode(), " ".join([cxx, mode, _rel(path)] + flags).encode()):
        digest.update(hashlib.sha256(part).digest())
    out_dir = cache_dir() / f"{path.stem}-{mode or 'plain'}-{digest.hexdigest()[:16]}"
    target = out_dir / ("runner" if mode == "thread" else "kernels.so")
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir))
    (work / "entries.cpp").write_text(entries)
    common = [cxx, "-std=c++17", "-g", "-fPIC", "-I", str(HERE), "-c"]
    # The runtime is never TSan-instrumented: its bookkeeping is shared between fibers on purpose.
    rt_flags = ["-O1", "-DCUEMU_TSAN"] if mode == "thread" else flags
    jobs = [common + flags + ["-include", str(SHIM), "-x", "c++", _rel(path), "-o", str(work / "k.o")],
            common + flags + [str(work / "entries.cpp"), "-o", str(work / "e.o")],
            common + rt_flags + [str(RUNTIME), "-o", str(work / "r.o")]]
    if mode == "thread":
        jobs.append(common + rt_flags + [str(RUNNER), "-o", str(work / "m.o")])
    _compile(jobs)
    objs = [str(work / o) for o in ("k.o", "e.o", "r.o")]
    if mode == "thread":
        link = [cxx, "-fsanitize=thread", "-o", str(work / "out")] + objs + [str(work / "m.o")]
    else:
        link = [cxx, "-shared"] + flags + ["-o", str(work / "out")] + objs
    _compile([link])
    os.replace(work / "out", target)               # atomic: a concurrent build sees all or nothing
    shutil.rmtree(work, ignore_errors=True)
    _prune(out_dir)
    return target


def _prune(keep: Path, builds: int = 3) -> None:
    """Drop all but the newest few builds of the same file and mode (edits would pile them up)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    old = sorted((p for p in keep.parent.glob(prefix + "*") if p != keep and p.is_dir()),
                 key=lambda p: p.stat().st_mtime, reverse=True)
    for path in old[builds - 1:]:
        shutil.rmtree(path, ignore_errors=True)


class Module:
    """One ``.cu`` file compiled for the CPU, like ``cupy.RawModule``."""

    def __init__(self, path: Path, mode: str | None = None):
        self.path = Path(path).resolve()
        self.mode = sanitize_mode() if mode is None else mode
        self.signatures = kernels.signatures(self.path)
        self.target = build(self.path, self.mode)
        self.lib = None
        if self.mode != "thread":
            try:
                self.lib = ctypes.CDLL(str(self.target))
            except OSError as exc:
                raise RuntimeError(f"{self.target}: {exc} (an ASan build needs LD_PRELOAD=libasan.so)") \
                    from exc
            self.lib.cuemu_alloc.restype = ctypes.c_void_p
            self.lib.cuemu_alloc.argtypes = [ctypes.c_size_t]
            self.lib.cuemu_free.argtypes = [ctypes.c_void_p]
            self.lib.cuemu_launch.restype = ctypes.c_int

    def get_function(self, name: str) -> "ExecutedKernel":
        return ExecutedKernel(self, name, self.signatures[name])


def module(path: Path) -> Module:
    """The module of a ``.cu`` file in the current sanitizer mode, built and loaded once."""
    key = (str(Path(path).resolve()), sanitize_mode())
    with _lock:
        if key not in _modules:
            _modules[key] = Module(Path(path))
        return _modules[key]


def load() -> dict[str, "ExecutedKernel"]:
    """``{name: ExecutedKernel}`` of every kernel of ``kernels/*.cu`` (``kernels.load()`` on the CPU)."""
    out = {}
    for src in kernels.sources():
        mod = module(src)
        for name in mod.signatures:
            out[name] = mod.get_function(name)
    return out


def _dim3(value, what: str) -> tuple[int, int, int]:
    dims = (int(value),) if np.isscalar(value) else tuple(int(v) for v in value)
    if not 1 <= len(dims) <= 3 or any(d < 1 for d in dims):
        raise ValueError(f"{what}: {value!r} is not 1 to 3 positive sizes")
    return (dims + (1, 1))[:3]


class ExecutedKernel:
    """A kernel of a ``Module``, called like ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, mod: Module, name: str, params: list[tuple[str, str]]):
        self.module, self.name, self.params = mod, name, params
        self.used_warp_intrinsics = False

    # --- arguments ------------------------------------------------------------------------------------
    def _marshal(self, args: Sequence) -> list[tuple[str, str, Any]]:
        """``[(kind, param, value)]``: kind "in", "out" (poisoned), "keep" (in and out), or "scalar"."""
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        out = []
        for (ctype, pname), value in zip(self.params, args):
            base = ctype.replace("const", "").replace("*", "").strip()
            want = np.dtype(C_TYPES[base])
            if ctype.endswith("*"):
                if not isinstance(value, np.ndarray) or value.dtype != want or not value.flags.c_contiguous:
                    raise TypeError(f"{self.name}({pname}): want a C-contiguous {want} array, got "
                                    f"{type(value).__name__} {getattr(value, 'dtype', '')}")
                if ctype.startswith("const"):
                    kind = "in"
                else:
                    if not value.flags.writeable:
                        raise TypeError(f"{self.name}({pname}): output is read-only")
                    kind = "keep" if (self.name, pname) in KEEPS else "out"
                out.append((kind, pname, value))
            else:
                if type(value) is not want.type:
                    raise TypeError(f"{self.name}({pname}): {type(value).__name__}, not numpy.{want.name}")
                out.append(("scalar", pname, value))
        return out

    def __call__(self, grid, block, args: Sequence, schedules: Sequence = SCHEDULES) -> None:
        grid3, block3 = _dim3(grid, f"{self.name} grid"), _dim3(block, f"{self.name} block")
        if self.module.path.parent == kernels.KERNEL_DIR:
            kernels.check_launch(self.name, grid3, block3)
        marshalled = self._marshal(args)
        threads = int(np.prod(grid3)) * int(np.prod(block3))
        if self.module.mode == "thread":
            if threads > MAX_TSAN_THREADS:
                raise ValueError(f"{self.name}: {threads} threads; ThreadSanitizer launches keep to "
                                 f"{MAX_TSAN_THREADS} (all blocks run at once there)")
            schedules = schedules[:1]
        results = []
        for label, order, seed, poison in schedules:
            results.append((label, self._run(grid3, block3, marshalled, order, seed, POISONS[poison])))
        first_label, first = results[0]
        for label, got in results[1:]:
            for (kind, pname, value), a, b in zip(marshalled, first, got):
                if a is None or np.array_equal(a, b):
                    continue
                i = int(np.flatnonzero(a != b)[0]) // value.itemsize
                if "poison" in label and kind == "out":
                    raise LaunchError(f"{self.name}({pname}): element {i} of {value.size} is never written "
                                      f"(it keeps the poison: {first_label} and {label} differ there)")
                raise LaunchError(f"{self.name}({pname}): schedule {label} differs from {first_label} first "
                                  f"at element {i} of {value.size} (grid {grid3}, block {block3})")
        for (kind, _pname, value), data in zip(marshalled, first):
            if data is not None:
                value.reshape(-1).view(np.uint8)[...] = data

    # --- one run --------------------------------------------------------------------------------------
    def _run(self, grid, block, marshalled, order: int, seed: int, poison: int) -> list:
        if self.module.mode == "thread":
            return self._run_tsan(grid, block, marshalled, order, seed, poison)
        lib = self.module.lib
        guard = 0 if self.module.mode == "address" else GUARD
        buffers, holders = [], []
        try:
            for kind, pname, value in marshalled:
                if kind == "scalar":
                    holders.append(np.array(value).copy())
                    buffers.append(None)
                    continue
                nbytes = value.nbytes
                raw = lib.cuemu_alloc(nbytes + 2 * guard)
                if not raw:
                    raise MemoryError(f"{self.name}({pname}): {nbytes} bytes")
                buffers.append((raw, nbytes))
                view = np.ctypeslib.as_array((ctypes.c_uint8 * (nbytes + 2 * guard)).from_address(raw))
                view[:guard] = 0xCD
                view[guard + nbytes:] = 0xCD
                body = view[guard:guard + nbytes]
                if kind == "out":
                    body[...] = poison
                else:
                    body[...] = value.reshape(-1).view(np.uint8)
                holders.append(np.array([raw + guard], dtype=np.uint64))
            argv = (ctypes.c_void_p * len(holders))(*[h.ctypes.data for h in holders])
            grid_c = (ctypes.c_uint * 3)(*grid)
            block_c = (ctypes.c_uint * 3)(*block)
            err = ctypes.create_string_buffer(2048)
            used = ctypes.c_int(0)
            entry = ctypes.cast(getattr(lib, f"cuemu_entry_{self.name}"), ctypes.c_void_p)
            rc = lib.cuemu_launch(entry, argv, grid_c, block_c, ctypes.c_int(order), ctypes.c_ulonglong(seed),
                                  ctypes.c_int(0), ctypes.c_size_t(STACK[self.module.mode]), err,
                                  ctypes.c_int(len(err)), ctypes.byref(used))
            if rc:
                raise LaunchError(f"{self.name} (grid {grid}, block {block}): {err.value.decode()}")
            self.used_warp_intrinsics |= bool(used.value)
            out = []
            for (kind, pname, value), buf in zip(marshalled, buffers):
                if buf is None:
                    out.append(None)
                    continue
                raw, nbytes = buf
                view = np.ctypeslib.as_array((ctypes.c_uint8 * (nbytes + 2 * guard)).from_address(raw))
                if guard and (np.any(view[:guard] != 0xCD) or np.any(view[guard + nbytes:] != 0xCD)):
                    raise LaunchError(f"{self.name}({pname}): written outside its {value.size} elements "
                                      f"(guard bytes changed)")
                out.append(view[guard:guard + nbytes].copy() if kind != "in" else None)
            return out
        finally:
            for buf in buffers:
                if buf is not None:
                    lib.cuemu_free(buf[0])

    def _run_tsan(self, grid, block, marshalled, order: int, seed: int, poison: int) -> list:
        with tempfile.TemporaryDirectory() as tmp:
            spec = [f"kernel {self.name}", f"grid {' '.join(map(str, grid))}",
                    f"block {' '.join(map(str, block))}", f"order {order} {seed}"]
            for i, (kind, _pname, value) in enumerate(marshalled):
                if kind == "scalar":
                    spec.append(f"scalar {np.array(value).tobytes().hex() or '00'}")
                    continue
                data = np.full(value.nbytes, poison, np.uint8) if kind == "out" else \
                    value.reshape(-1).view(np.uint8)
                file = Path(tmp) / f"arg{i}"
                file.write_bytes(data.tobytes())
                spec.append(f"buffer {value.nbytes} {file}")
            (Path(tmp) / "spec").write_text("\n".join(spec) + "\n")
            env = dict(os.environ, TSAN_OPTIONS=os.environ.get("TSAN_OPTIONS", "halt_on_error=1:exitcode=66"))
            proc = subprocess.run([str(self.module.target), str(Path(tmp) / "spec")], capture_output=True,
                                  text=True, env=env, timeout=300)
            if proc.returncode:
                raise LaunchError(f"{self.name} (grid {grid}, block {block}) under ThreadSanitizer, exit "
                                  f"{proc.returncode}:\n{proc.stdout}{proc.stderr[-6000:]}")
            self.used_warp_intrinsics |= "used_warp=1" in proc.stdout
            out = []
            for i, (kind, _pname, value) in enumerate(marshalled):
                out.append(np.frombuffer((Path(tmp) / f"arg{i}").read_bytes(), np.uint8).copy()
                           if kind in ("out", "keep") else None)
            return out
