"""``lstmvis unit``: the profile of one cell over the whole corpus (``gpu_matcher.hypotheses``): its top
activating contexts, an activation histogram and the tokens it fires on. Prints one JSON object."""

from __future__ import annotations

import json

from gpu_matcher.cli.common import add_backend, add_scale, find_project


def cmd_unit(args) -> int:
    from gpu_matcher import hypotheses
    from gpu_matcher.engine import Engine

    engine = Engine(find_project(args.project_dir), backend=args.backend)
    source = args.source or engine.project.default_source
    profile = hypotheses.unit_profile(engine, source, args.cell, args.threshold, args.scale, top=args.top,
                                      window=args.window, bins=args.bins, tokens=args.tokens)
    print(json.dumps(profile.as_dict()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("unit", help="one cell over the whole corpus: top activating contexts, activation "
                                    "histogram, the tokens it fires on; prints one JSON object")
    p.add_argument("project_dir")
    p.add_argument("--source", help="FILE::PATH (default: the first source)")
    p.add_argument("--cell", type=int, required=True)
    p.add_argument("--threshold", type=float, help="'on' for the token rates (default: 0.3, or the scale's "
                                                   "default)")
    add_scale(p, "read --threshold on a per-cell normalised value (gpu_matcher.scaling)")
    p.add_argument("--top", type=int, default=10, help="contexts (and tokens) to print")
    p.add_argument("--tokens", type=int, help="tokens to print (default: --top)")
    p.add_argument("--window", type=int, default=5, help="steps shown either side of a context's peak")
    p.add_argument("--bins", type=int, default=40, help="histogram bins over the value range")
    add_backend(p)
    p.set_defaults(func=cmd_unit)
