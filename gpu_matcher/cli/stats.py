"""Subcommands for testing a hypothesis with numbers (``gpu_matcher.stats``): ``stats`` (enrichment of a
selection's matches and S as a detector of a label), ``suggest`` (cells that separate a range or a label
from the rest) and ``compare`` (one selection in two sources). Each prints one JSON object.
"""

from __future__ import annotations

import json

from gpu_matcher.cli.common import add_backend, add_scale, add_selection, find_project, parse_cells
from gpu_matcher.errors import ProjectError


def _open(path: str, backend: str):
    from gpu_matcher.engine import Engine

    return Engine(find_project(path), backend=backend)


def _source(engine, name: str | None) -> str:
    name = name or engine.project.default_source
    engine.project.source(name)                        # a ProjectError naming the choices if unknown
    return name


def _cells(engine, source: str, args) -> list[int]:
    if args.cells is not None:
        cells = parse_cells(args.cells)
    elif args.start is None or args.end is None:
        raise ProjectError("give --start and --end (a brushed range) or --cells")
    else:
        cells = engine.select(source, args.start, args.end, args.threshold, args.left, args.right,
                              scale=args.scale).cells
    if not cells:
        raise ProjectError(f"the selection [{args.start}, {args.end}] at threshold {args.threshold} picks no "
                           "cells; lower the threshold or change the margins")
    return cells


def cmd_stats(args) -> int:
    from gpu_matcher import stats

    engine = _open(args.project_dir, args.backend)
    source = _source(engine, args.source)
    if args.at_least is not None and args.label is None:
        raise ProjectError("--at-least needs --label (the label the detector should predict)")
    cells = _cells(engine, source, args)
    matches = engine.match(source, cells, args.threshold, args.left, args.right, args.top, scale=args.scale)
    out = {"source": source, "cells": sorted(set(cells)), "threshold": args.threshold, "scale": args.scale,
           "matches": len(matches),
           "enrichment": stats.enrichment(engine, source, matches, args.track).as_dict()}
    if args.label is not None:
        curve = stats.detector_curve(engine, source, cells, None, args.track, args.label, args.scale)
        out["detector"] = stats.detector(engine, source, cells, args.threshold, args.track, args.label,
                                         args.scale).as_dict()
        out["detector"]["label"] = args.label
        out["best"] = curve.best.as_dict() if curve.best else None
        if args.curve:
            out["curve"] = [p.as_dict() for p in curve.points]
        if args.curve or args.at_least is not None:
            out.update(_at_least(engine, source, cells, args))
    print(json.dumps(out))
    return 0


def _at_least(engine, source: str, cells: list[int], args) -> dict:
    """The "at least m of k on" keys: the curve over m at --threshold and the best (m, threshold) with
    --curve; with --at-least M, that detector at --threshold and its best threshold (and curve)."""
    from gpu_matcher import hypotheses, stats

    grid = hypotheses.at_least_grid(engine, source, cells,
                                    [args.threshold, *stats.default_thresholds(engine, source, scale=args.scale)],
                                    args.track, args.label, args.scale)
    out: dict = {}
    if args.curve:
        best = grid.best()
        out["m_curve"] = [p.as_dict() for p in grid.over_m(0)]
        out["m_best"] = best.as_dict() if best else None
        out["m_best_by_m"] = [b.as_dict() if b else None for b in grid.best_by_m()]
    if args.at_least is not None:
        m = args.at_least
        point = grid.point(m, 0)
        curve = [grid.point(m, j).detection for j in range(1, len(grid.thresholds))]
        best = stats.best_f1(curve)
        out["at_least"] = {**point.as_dict(), "label": args.label,
                           "best": hypotheses.AtLeast(m, grid.k, best).as_dict() if best else None}
        if args.curve:
            out["at_least"]["curve"] = [p.as_dict() for p in curve]
    return out


def cmd_suggest(args) -> int:
    from gpu_matcher import stats

    engine = _open(args.project_dir, args.backend)
    source = _source(engine, args.source)
    if (args.start is None) == (args.label is None) or (args.label is not None and not args.track):
        raise ProjectError("give either --start and --end (a range) or --track and --label")
    ranked = stats.suggest_cells(engine, source, args.threshold, args.start, args.end,
                                 track=args.track if args.label is not None else None, label=args.label,
                                 top=args.top, scale=args.scale)
    print(json.dumps({"source": source, "threshold": args.threshold, "cells": [r.as_dict() for r in ranked]}))
    return 0


def cmd_compare(args) -> int:
    from gpu_matcher import stats

    engine_a = _open(args.project_dir, args.backend)
    engine_b = _open(args.other_project, args.backend) if args.other_project else engine_a
    source_a = _source(engine_a, args.source)
    source_b = _source(engine_b, args.other_source)
    out = stats.compare(engine_a, source_a, engine_b, source_b, args.start, args.end, args.threshold,
                        args.left, args.right, args.top, args.track, scale=args.scale)
    print(json.dumps(out.as_dict()))
    return 0


def _common(p, range_required: bool = False, scale: bool = True) -> None:
    add_selection(p, range_required)
    add_backend(p)
    if scale:
        add_scale(p, "threshold a per-cell normalised value (gpu_matcher.scaling)")


def register(sub) -> None:
    p = sub.add_parser("stats", help="label enrichment of a selection's matches and S as a detector of a label "
                                     "(precision, recall, F1, best threshold); prints one JSON object")
    _common(p)
    p.add_argument("--cells", help="comma-separated cell indices instead of a brushed range")
    p.add_argument("--track", required=True, help="a discrete meta track")
    p.add_argument("--label", help="the label S should detect (its name or value)")
    p.add_argument("--curve", action="store_true", help="also print the detector curve over thresholds, "
                                                        "the curve over m (at least m of the k cells on) and the "
                                                        "best (m, threshold)")
    p.add_argument("--at-least", type=int, metavar="M", help="with --label: also score \"at least M of the k cells "
                                                             "on\" (its best threshold; its curve with --curve)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("suggest", help="cells that best separate a range or a label from the rest of the corpus")
    _common(p)
    p.add_argument("--track", help="with --label: a discrete meta track")
    p.add_argument("--label")
    p.set_defaults(func=cmd_suggest, top=20)

    p = sub.add_parser("compare", help="one selection in two sources (layers, cell vs hidden, two checkpoints "
                                       "over the same tokens): both match lists, their overlap, enrichments")
    _common(p, range_required=True)
    p.add_argument("--other-source", help="the second source (default: the first source of the other project)")
    p.add_argument("--other-project", help="a second project over the same token timeline")
    p.add_argument("--track", help="a discrete meta track whose enrichments to compare")
    p.set_defaults(func=cmd_compare)
