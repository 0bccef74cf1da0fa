"""Entry for ``bokeh serve bokeh_app --args DATA_DIR [--backend auto|numpy|cupy] [--dask SPEC]`` (per session)."""

import argparse
import sys

from bokeh.io import curdoc

from bokeh_app.app import build_document
from bokeh_app.catalogue import default_data_dir, get_catalogue
from gpu_matcher.backends import BACKEND_NAMES

_parser = argparse.ArgumentParser(prog="bokeh serve bokeh_app --args")
_parser.add_argument("data_dir", nargs="?")
_parser.add_argument("--backend", default="auto", choices=list(BACKEND_NAMES))
_parser.add_argument("--dask", metavar="SCHEDULER|local[:N]", help="match on a Dask cluster")
_args = _parser.parse_args(sys.argv[1:])

build_document(curdoc(), get_catalogue(_args.data_dir or default_data_dir(), _args.backend, _args.dask))
