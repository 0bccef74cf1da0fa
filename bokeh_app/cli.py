"""``lstmvis serve``: registered in the ``lstmvis.commands`` entry point group (pyproject.toml), which
``gpu_matcher.cli`` reads. Imports no Bokeh until the command runs."""

from __future__ import annotations

import os
import sys

from gpu_matcher.backends import BACKEND_NAMES
from gpu_matcher.errors import ProjectError


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the LSTMVis app for every project under DATA_DIR "
                                            "(no DATA_DIR: the bundled demo)")
    p.add_argument("data_dir", nargs="?", help="folder searched for lstm.yml projects")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    p.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST:PORT",
                   help="also accept pages from this origin (for embedding); repeatable")
    p.add_argument("--backend", default="auto", choices=list(BACKEND_NAMES))
    p.add_argument("--dask", metavar="SCHEDULER|local[:N]",
                   help="run matches on a Dask cluster (needs the dask extra); --backend is the workers'")
    p.add_argument("--num-procs", type=int, default=1, metavar="N",
                   help="server processes sharing the port (Bokeh's --num-procs; 0: one per core)")
    p.add_argument("--show", action="store_true", help="open the app in a browser")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from pathlib import Path

    from bokeh_app.catalogue import default_data_dir

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not data_dir.is_dir():
        raise ProjectError(f"{data_dir}: data folder missing or not a folder")
    if not 0 <= args.port <= 65535:
        raise ProjectError(f"--port {args.port}: expected 0..65535")
    with_system_malloc(args)
    from bokeh_app.server import serve     # Bokeh is imported only here

    return serve(data_dir, port=args.port, address=args.address,
                 allow_websocket_origin=args.allow_websocket_origin, backend=args.backend, show=args.show,
                 dask=args.dask, num_procs=args.num_procs)


def with_system_malloc(args) -> None:
    """Run this ``serve`` again under ``PYTHONMALLOC=malloc`` (on Linux, unless PYTHONMALLOC is set): with
    Python's own allocator the memory of sessions that have left stayed with the server (its 1 MiB arenas
    pinned by a few live objects each: RSS +70% after 40 sessions), with the C library's it goes back to
    the system (``worker.release_memory``), at about the same CPU per session (README: load). And with
    ``MALLOC_ARENA_MAX=2`` (unless set): glibc gives each thread that allocates its own arena (up to 8 a
    core), and the worker threads' arenas kept their high-water mark (10^6 x 256, 40 sessions: peak 828 ->
    505 MB, after +53% -> +4%, the same CPU a session)."""
    if not sys.platform.startswith("linux") or "PYTHONMALLOC" in os.environ:
        return
    argv = ["serve", *([str(args.data_dir)] if args.data_dir else []), "--port", str(args.port),
            "--address", args.address, "--backend", args.backend, "--num-procs", str(args.num_procs)]
    for origin in args.allow_websocket_origin:
        argv += ["--allow-websocket-origin", origin]
    argv += ["--dask", args.dask] if args.dask else []
    argv += ["--show"] if args.show else []
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "gpu_matcher.cli", *argv],
              {"MALLOC_ARENA_MAX": "2", **os.environ, "PYTHONMALLOC": "malloc"})
