"""Subcommands that bring data in: ``demo``, ``convert-text``, ``annotate``, ``convert-zarr``, ``extract``.

Imported on every run of ``lstmvis``, so nothing heavy (PyTorch) is imported here; each command imports
what it needs when it runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from pathlib import Path

from gpu_matcher.errors import ProjectError


def cmd_demo(args) -> int:
    from gpu_matcher.demo import PROJECT_NAME, ensure_demo, ensure_genome_demo

    t0 = time.perf_counter()
    if args.genome:
        from gpu_matcher.demo.genome_demo import PROJECT_NAME as name

        data_dir = ensure_genome_demo(args.out, force=args.force)
    else:
        data_dir, name = ensure_demo(args.out, force=args.force), PROJECT_NAME
    print(f"demo project: {data_dir / name} ({time.perf_counter() - t0:.1f} s)")
    print(f"explore it:   lstmvis serve {data_dir}")
    return 0


def cmd_convert_text(args) -> int:
    from gpu_matcher.io.text import LSTM_YML_HINT, convert_text

    s = convert_text(args.text, args.out, level=args.level, dictionary=args.dict, eos=args.eos,
                     lowercase=args.lowercase, overwrite=args.overwrite, encoding=args.encoding)
    notes = []
    if s.skipped_empty:
        notes.append(f"{s.skipped_empty} empty lines skipped")
    if args.dict:
        notes.append(f"{s.unknown} tokens not in {args.dict} became the unknown token")
    print(f"{s.folder}: {s.tokens} tokens in {s.sequences} sequences, {s.vocabulary} dictionary entries"
          + (f" ({'; '.join(notes)})" if notes else ""))
    print("lstm.yml keys for these files:\n" + LSTM_YML_HINT)
    return 0


def cmd_annotate(args) -> int:
    from gpu_matcher.io.conll import annotate

    s = annotate(args.conll, args.project_dir, args.columns, ignore=args.ignore or (), unk=args.unk,
                 lowercase=args.lowercase, overwrite=args.overwrite, encoding=args.encoding)
    tracks = ", ".join(f"{n} ({k} labels)" for n, k in s.tracks.items())
    print(f"{s.project}: added meta tracks {tracks} over {s.steps} steps"
          + (f" ({s.ignored} ignored steps labelled _)" if s.ignored else ""))
    return 0


def cmd_convert_zarr(args) -> int:
    from gpu_matcher.io.zarr_convert import convert_project_to_zarr

    s = convert_project_to_zarr(args.project_dir, args.out, chunk_steps=args.chunk_steps,
                                compression=args.compression, overwrite=args.overwrite,
                                progress=not args.quiet)
    files = ", ".join(f"{k}: {v}" for k, v in s.files.items())
    print(f"{s.folder}: {s.arrays} arrays ({s.bytes / 2**20:.1f} MiB) in Zarr v3, chunks of "
          f"{s.chunk_steps} steps ({files})")
    return 0


def load_model(spec: str):
    """``package.module:factory`` or ``path/to/file.py:factory``; ``factory()`` returns an nn.Module
    (or the attribute is the module itself)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ProjectError(f"--model {spec!r}: expected 'package.module:factory' or 'file.py:factory'")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ProjectError(f"--model {spec!r}: file {path} missing")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.path.insert(0, str(path.resolve().parent))
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise ProjectError(f"--model {spec!r}: cannot import {target} ({exc})") from None
    if not hasattr(module, attr):
        raise ProjectError(f"--model {spec!r}: {target} has no attribute {attr!r}")
    obj = getattr(module, attr)
    import torch

    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise ProjectError(f"--model {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_genome_model(spec: str):
    """``--model`` of extract-genome: a TorchScript or pickled ``nn.Module`` (``.pt``/``.pth``), the
    genomic demo's weights (``.npz``), or ``package.module:factory`` / ``file.py:factory``."""
    path = Path(spec)
    if path.suffix == ".npz":
        from gpu_matcher.demo.danq_torch import demo_model

        return demo_model(path)
    if path.suffix not in (".pt", ".pth"):
        return load_model(spec)
    import torch

    if not path.is_file():
        raise ProjectError(f"--model {spec!r}: file missing")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)     # TorchScript is deprecated, still in use
            return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:
        pass                                      # not TorchScript: a whole pickled module
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)  # the user's own file
    except Exception as exc:  # unpickling raises many types
        raise ProjectError(f"--model {spec!r}: cannot load ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, torch.nn.Module):
        raise ProjectError(f"--model {spec!r}: holds {type(model).__name__}, not a torch.nn.Module (a "
                           "state_dict needs its class: use package.module:factory)")
    return model


def _on_device(model, device: str | None):
    return model.to(device) if device else model


def cmd_extract_genome(args) -> int:
    try:
        from gpu_matcher.extract.genome import extract_genome
    except ModuleNotFoundError as exc:
        raise ProjectError(f"extract-genome needs PyTorch ({exc}): pip install 'lstmvis-gpu[torch]'") from None
    model = _on_device(load_genome_model(args.model), args.device)
    t0 = time.perf_counter()
    path = extract_genome(model, args.out, window=args.window, stride=args.stride, rnns=args.rnn or (),
                          modules=args.module or (),
                          outputs=args.outputs.split(",") if args.outputs else None, layout=args.layout,
                          batch_size=args.batch_size, threads=args.threads,
                          dtype="float32" if args.float32 else "float16",
                          format=args.format, device=args.device, overwrite=args.overwrite, progress=not args.quiet)
    print(f"states written: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_extract(args) -> int:
    try:
        from gpu_matcher.extract import extract, hf_forward, default_forward
    except ModuleNotFoundError as exc:
        raise ProjectError(f"extract needs PyTorch ({exc}): pip install 'lstmvis-gpu[torch]'") from None
    model = _on_device(load_model(args.model), args.device)
    out = extract(model, args.corpus, args.out, rnns=args.rnn or (), modules=args.module or (),
                  gates=args.gates, logits=args.logits, topk=args.topk, batch_size=args.batch_size,
                  dtype="float16" if args.float16 else "float32", device=args.device,
                  forward=hf_forward if args.hf else default_forward, pad_id=args.pad_id,
                  resume=args.resume, overwrite=args.overwrite, name=args.name,
                  progress=not args.quiet)
    print(f"project written: {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="write the demo project (an LSTM on the paper's counting language)")
    p.add_argument("--out", help="data folder to write it into (default: ~/.cache/lstmvis/demo)")
    p.add_argument("--force", action="store_true", help="regenerate even if it is up to date")
    p.add_argument("--genome", action="store_true", help="the genomic demo instead: a DanQ-like model "
                   "(convolution + bidirectional LSTM) over a synthetic genome with planted binding sites")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("convert-text", help="text (one sequence per line) -> train.h5 (word ids, "
                                            "sequence starts) and words.dict")
    p.add_argument("text", help="a text file, one sequence per line")
    p.add_argument("out", help="output folder")
    p.add_argument("--level", choices=["word", "char"], default="word",
                   help="word: split lines on white space; char: every character is a token")
    p.add_argument("--dict", help="use this .dict (your model's vocabulary); unknown tokens become its <unk> "
                        "or [UNK]")
    p.add_argument("--eos", action="store_true", help="end every sequence with </s>")
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_text)

    p = sub.add_parser("annotate", help="CoNLL-style columns -> meta tracks aligned with a project's tokens")
    p.add_argument("conll", help="one token per line, columns separated by tabs or spaces")
    p.add_argument("project_dir", help="the project folder (holds lstm.yml)")
    p.add_argument("--columns", default="token,tag",
                   help="a name per column; one must be 'token'; '_' skips a column "
                        "(e.g. CoNLL-2003: token,pos,chunk,ner; CoNLL-U: _,token,lemma,upos,xpos)")
    p.add_argument("--ignore", action="append", metavar="TOKEN",
                   help="a timeline token absent from the CoNLL file, e.g. </s> (repeatable)")
    p.add_argument("--unk", help="timeline token that matches any word (default: <unk>, [UNK] and other "
                                 "conventional spellings)")
    p.add_argument("--lowercase", action="store_true", help="compare tokens case-insensitively")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--overwrite", action="store_true", help="replace meta tracks of the same name")
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("convert-zarr", help="copy a project with its HDF5 files as Zarr v3 stores chunked "
                                            "along T (for --dask); the original is not modified")
    p.add_argument("project_dir", help="the project folder (holds lstm.yml)")
    p.add_argument("out", help="folder for the converted copy")
    p.add_argument("--chunk-steps", type=int, help="steps per chunk (default: ~16 MiB of the widest source)")
    p.add_argument("--compression", choices=["zstd", "none"], default="zstd")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert_zarr)

    p = sub.add_parser("extract", help="run a PyTorch model over a corpus and write its states (needs torch)")
    p.add_argument("corpus", help="a folder written by convert-text (train.h5, words.dict)")
    p.add_argument("out", help="the project folder to write")
    p.add_argument("--model", required=True,
                   help="package.module:factory or file.py:factory returning the torch.nn.Module")
    p.add_argument("--rnn", action="append", metavar="NAME", help="an nn.LSTM/nn.GRU submodule (repeatable)")
    p.add_argument("--module", action="append", metavar="NAME", help="any submodule, via a forward hook "
                                                                      "(repeatable)")
    p.add_argument("--gates", action="store_true", help="also record the RNN gates")
    p.add_argument("--logits", metavar="output|NAME", help="top-K predictions from the model's output or "
                                                           "from a module's (B, L, V) output")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pad-id", type=int, default=0, help="token id used for padding (default 0)")
    p.add_argument("--hf", action="store_true", help="call model(input_ids=..., attention_mask=...)")
    p.add_argument("--float16", action="store_true", help="store states as float16 (half the size)")
    p.add_argument("--device", help="e.g. cuda or cpu (default: where the model is)")
    p.add_argument("--name", help="project name shown in the app")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a project in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("extract-genome", help="add the states of a PyTorch conv + recurrent model of one-hot "
                                              "DNA to a genome project, in sliding windows (needs torch)")
    p.add_argument("out", help="a project written by convert-fasta")
    p.add_argument("--model", required=True, help="MODEL.pt (TorchScript or a pickled nn.Module), weights "
                   "of the genomic demo (.npz), or package.module:factory / file.py:factory")
    p.add_argument("--window", type=int, default=1000, help="bases the model sees at once (default 1000)")
    p.add_argument("--stride", type=int, default=500, help="bases between windows; each keeps its centre "
                   "STRIDE bases (default 500)")
    p.add_argument("--rnn", action="append", metavar="NAME", help="an nn.LSTM/nn.GRU to unroll (repeatable; "
                   "default: every RNN and every Conv1d)")
    p.add_argument("--module", action="append", metavar="NAME", help="a module whose per-base output to "
                   "record, e.g. the ReLU after a convolution (repeatable)")
    p.add_argument("--outputs", metavar="A,B,..", help="names of the model's output columns (tracks "
                   "pred_<name>); default: model.proteins, else out0, out1, ...")
    p.add_argument("--layout", choices=["NCL", "NLC"], default="NCL",
                   help="model input: (batch, 4, length) [default] or (batch, length, 4)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default: from the memory "
                   "a window takes; 128 MiB per batch on a CPU, 2 GiB on a GPU)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's, lowered to the "
                   "cores other jobs leave idle)")
    p.add_argument("--float32", action="store_true", help="store states as float32 (default float16)")
    p.add_argument("--format", choices=["h5", "zarr", "auto"], default="auto",
                   help="states.h5 or a Zarr store states.zarr (auto: Zarr from 10^8 bases)")
    p.add_argument("--device", help="e.g. cuda or cpu (default: where the model is)")
    p.add_argument("--overwrite", action="store_true", help="replace the project's states")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract_genome)
