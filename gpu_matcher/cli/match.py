"""``lstmvis info`` and ``lstmvis match``: what a project holds, and the exact matches of a selection."""

from __future__ import annotations

import json
import statistics
import time

from gpu_matcher import defaults
from gpu_matcher.cli.common import add_backend, add_scale, add_selection, find_project, parse_cells
from gpu_matcher.errors import ProjectError
from gpu_matcher.formats import CONFIG_NAME


def cmd_info(args) -> int:
    from gpu_matcher.project import discover_projects, open_project

    found = discover_projects(args.data_dir)
    if not found:
        raise ProjectError(f"{args.data_dir}: no {CONFIG_NAME} found in this folder or below")
    out = []
    for pid, folder in found.items():
        try:
            project = open_project(folder, project_id=pid)
        except ProjectError as exc:
            out.append({"id": pid, "error": str(exc)})
            continue
        out.append(project.summary())
        project.close()
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for p in out:
        if "error" in p:
            print(f"{p['id']}: ERROR {p['error']}")
            continue
        print(f"{p['id']}: {p['name']} - {p['description']}  (T={p['T']}, {p['sequences']} sequences)")
        for name, s in p["sources"].items():
            T, D = s["shape"]
            print(f"  source {name}  (T, D) = ({T}, {D})  {s['dtype']}  transform={s['transform']}")
        for name, kind in p["meta"].items():
            print(f"  meta   {name}  {kind}")
    return 0


def cmd_match(args) -> int:
    from gpu_matcher.engine import Engine

    if args.shard_steps is not None and not args.dask:
        raise ProjectError("--shard-steps applies to --dask only")
    project = find_project(args.project_dir)
    source = args.source or project.default_source
    if args.dask:                               # only here is anything of Dask imported
        from gpu_matcher.backends.dask import make_dask_backend

        backend = make_dask_backend(args.dask, worker_backend=args.backend, shard_steps=args.shard_steps)
        try:
            return _match(args, Engine(project, backend=backend), source)
        finally:
            backend.close()
    return _match(args, Engine(project, backend=args.backend), source)


def _match(args, engine, source: str) -> int:
    sequences = not args.no_sequences
    if args.region is not None:                 # a genome project: the brushed range as a coordinate
        genome = engine.project.genome
        if genome is None:
            raise ProjectError(f"--region {args.region!r}: the project has no genome (use --start/--end)")
        first, stop = genome.parse(args.region)
        args.start, args.end = first, stop - 1
    if args.cells is not None:
        cells = parse_cells(args.cells)
    else:
        if args.start is None or args.end is None:
            raise ProjectError("give --start and --end (a brushed range) or --cells")
        cells = engine.select(source, args.start, args.end, args.threshold, args.left, args.right,
                              sequences, scale=args.scale).cells
    if not cells:
        raise ProjectError(f"the selection [{args.start}, {args.end}] at threshold {args.threshold} "
                           "picks no cells; lower the threshold or change the margins")
    engine.layout(source)                       # building/loading the layout is not match time
    times, matches = [], []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        matches = engine.match(source, cells, args.threshold, args.left, args.right, args.top,
                               args.min_length, args.phrase_length, not args.no_distinct, sequences,
                               scale=args.scale)
        times.append((time.perf_counter() - t0) * 1000.0)
    genome = engine.project.genome
    rows = [m.as_dict() for m in matches]
    if genome is not None:                      # a genome project: where each match lies, 1-based
        for row in rows:
            row["coords"] = genome.format_range(row["start"], row["end"] + 1)
    out = {
        "cells": [int(c) for c in sorted(set(cells))],
        "matches": rows,
        "backend": engine.backend.name,
        "timing_ms": {"first": round(times[0], 3), "median": round(statistics.median(times), 3)},
    }
    if args.dask:
        out["dask"] = {"cluster": engine.backend.describe(), "shards": engine.layout(source).shards}
    print(json.dumps(out))
    return 0


def register(sub) -> None:
    match = defaults.section("match")
    p = sub.add_parser("info", help="list projects, sources (T, D) and meta tracks under DATA_DIR")
    p.add_argument("data_dir")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("match", help="exact top-N matches for a selection; prints one JSON object")
    add_selection(p)
    p.add_argument("--cells", help="comma-separated cell indices instead of a brushed range")
    p.add_argument("--region", help="genome projects: the brushed range as chr2:1,001-1,010 (1-based, "
                                    "inclusive) instead of --start/--end")
    p.add_argument("--min-length", type=int, default=int(match["min_length"]))
    p.add_argument("--phrase-length", type=int, default=int(match["phrase_length"]))
    p.add_argument("--no-distinct", action="store_true")
    p.add_argument("--no-sequences", action="store_true", help="ignore the project's sequence boundaries")
    add_backend(p, "array backend (with --dask: the one each worker uses)")
    p.add_argument("--dask", metavar="SCHEDULER|local[:N]",
                   help="match on a Dask cluster: a scheduler address or file, or local:N worker processes "
                        "(needs the dask extra)")
    p.add_argument("--shard-steps", type=int, help="with --dask: steps per shard (default ~512 MB of states)")
    p.add_argument("--repeat", type=int, default=1, help="run the match K times; report the median")
    add_scale(p, "threshold a per-cell normalised value: z-score or quantile within the cell "
                 "(gpu_matcher.scaling; runs on the NumPy backend)")
    p.set_defaults(func=cmd_match)
