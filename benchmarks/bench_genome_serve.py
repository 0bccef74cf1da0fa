"""Genome scale, served (issue 15): a synthetic genome converted, served with ``--dask local:N``, measured
from a client; a projection of the paper's 2.3 x 10^9-base case.

The project is ``bench_genome.build``'s (FASTA streamed to disk, ``convert_fasta``, N/1000 BED
intervals, a dense per-base track) with the state source written as uncompressed Zarr chunked along T
(``--dim`` float16 cells, synthetic), so the Dask path shards it. Then:

- ``lstmvis serve WORK --dask local:N`` on 127.0.0.1 and a free port (a subprocess, bounded waits);
- client sessions (``bench_load.RawSession``: BokehJS's WebSocket protocol, the document kept as JSON),
  each opened the way a browser does: an HTTP GET of the app page (the server builds the session's
  document), then the WebSocket with the page's token and PULL-DOC. Timed from the GET:
  * first view: ``?project=..&pos=chr1:P&tracks=..`` (the server's first opening of the project) until
    the project page is in the client's document, its detail view at P (go to a coordinate by URL);
    then the overview strip's track band;
  * a second session's page, then "go to" typed (``chr1:3P/2``) until the detail view is there;
  * one match: ``..&brush=S,E&threshold=θ`` (a few bases): the page, the first match rows (with the
    server's own split from its status line: the engine's match on the cluster, the whole match job),
    the overview's n(t) band for S (and how much of the contig it spans) and the matches' band; the rows
    must equal ``lstmvis match --dask local:N``'s for the same query (run after the server stopped, on its
    own cluster); a second brush elsewhere (a new query, the workers' layouts built);
  * (``--first-view-only`` stops after the first two);
- memory: the peak RSS of every process (the server, each Dask worker, the CLI's) sampled every 0.2 s
  (psutil if installed, else /proc);
- the layout builds' wall times (from the cache folders' files), a layout of the WHOLE source that the
  server built in its own process (the hypothesis panel's corpus scans have no sharded version), the
  reductions of the overview strip timed in one process (n(t) of the whole contig, both tracks);
- the machine, its load (``os.getloadavg``) before, after the sessions and at the end, the backend,
  disk sizes, and a projection to 2.3 x 10^9 bases from the per-base rates (docs/genomics.md, "At genome
  scale", has the figures and what they mean).

    python benchmarks/bench_genome_serve.py --bases 1000000          # a quick check (about a minute)
    python benchmarks/bench_genome_serve.py --bases 100000000 --work /path/with/15GB
Disk at 10^8 bases and ``--dim 32``: states 6.4 GB, the workers' layouts as much again, the server's
layout of the whole source (while the hypothesis panel computes with every match) twice as much, the
genome, FASTA and dense track 0.5 GB: about 26 GB (``--work`` is removed afterwards unless ``--keep``).
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_engine import machine  # noqa: E402
from benchmarks.bench_genome import build, store_bytes  # noqa: E402
from benchmarks.bench_load import REPO, RawSession, child_pids, decode_columns, free_port, process_rss_mb  # noqa: E402

GENOME = 2.3e9
HG38_CHR1 = 248_956_422               # the longest contig an overview of the paper's case covers
WATCHED = ("matches", "threshold", "overview", "overview_window", "position", "traces", "goto", "status")
ROW_KEYS = ("start", "end", "length", "inter", "union")
OVERVIEW_KEYS = ("x", "bottom", "top", "band")
BAND = {"matches": 0, "track": 1, "n(t)": 2}       # bokeh_app.overview.BANDS' order


# --- the client --------------------------------------------------------------------------------------
class PageSession(RawSession):
    """``RawSession`` opened from a page GET, following a few named models of the project page (their
    attributes as JSON, data sources decoded) and when each last changed."""

    def __init__(self, http_url: str, ws_url: str, arguments: dict):
        super().__init__(ws_url, arguments)
        self.http_url = http_url
        self.models: dict[str, dict] = {}
        self.changed: dict[str, float] = {}
        self.t0 = 0.0

    async def get_page(self) -> None:
        """The HTTP GET a browser makes: the server builds the document; the page carries its token."""
        from tornado.httpclient import AsyncHTTPClient

        self.t0 = time.perf_counter()
        reply = await AsyncHTTPClient().fetch(f"{self.http_url}?{urlencode(self.arguments)}", request_timeout=600)
        found = re.search(r'"token":\s*"([^"]+)"', reply.body.decode())
        if found is None:
            raise RuntimeError(f"no session token in the page {self.http_url} returned")
        self.token = found.group(1)

    def find(self, node, buffers) -> None:
        if isinstance(node, dict):
            attrs = node.get("attributes")
            name = attrs.get("name") if isinstance(attrs, dict) else None
            if node.get("type") == "object" and name in WATCHED:
                self.ids[name] = node["id"]
                self.models[name] = dict(attrs)
                self._decode(name, buffers)
                self.changed[name] = time.perf_counter()
            for value in node.values():
                self.find(value, buffers)
        elif isinstance(node, list):
            for value in node:
                self.find(value, buffers)

    def _decode(self, name: str, buffers) -> None:
        attrs = self.models[name]
        if name == "matches" and "data" in attrs:
            self.set_rows(attrs["data"], buffers)
        elif name == "overview" and "data" in attrs:
            attrs["columns"] = decode_columns(attrs["data"], buffers, OVERVIEW_KEYS)

    def apply(self, event: dict, buffers) -> None:
        if event.get("kind") == "RootAdded":                   # the page replacing the "opening" page
            self.find(event, buffers)
            return
        ref = event.get("model", {}).get("id")
        name = next((n for n, i in self.ids.items() if i == ref), None)
        if name is None:
            if event.get("kind") == "ModelChanged":
                self.find(event.get("new"), buffers)             # e.g. a page put into its shell's children
            return
        if event.get("kind") == "ColumnDataChanged":
            self.models[name]["data"] = event["data"]
        elif event.get("kind") == "ModelChanged":
            self.models[name][event["attr"]] = event["new"]
        else:
            return
        self._decode(name, buffers)
        self.changed[name] = time.perf_counter()

    async def until(self, done, timeout: float) -> float | None:
        """Read the server's messages until ``done()``; seconds since the page GET, None on timeout."""
        async def loop():
            while not done():
                header, content, buffers = await self.read()
                if header["msgtype"] == "PATCH-DOC":
                    for event in content.get("events", []):
                        self.apply(event, buffers)
        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            return None
        return time.perf_counter() - self.t0

    async def set_value(self, name: str, value) -> None:
        await self.send("PATCH-DOC", {"events": [
            {"kind": "ModelChanged", "model": {"id": self.ids[name]}, "attr": "value", "new": value}]})

    # what the page shows
    def page_built(self) -> bool:
        return "overview" in self.ids and "traces" in self.ids and "position" in self.ids

    def at(self, step: int) -> bool:
        """The detail view starts at ``step`` or shows it."""
        pos = self.models.get("position", {}).get("value")
        return pos is not None and pos <= step < pos + 2000

    def band(self, name: str) -> bool:
        cols = self.models.get("overview", {}).get("columns")
        return bool(cols) and BAND[name] in cols["band"]

    def band_share(self, name: str) -> float:
        """The share of the strip's x extent the band spans (the track band spans all of it; bins with
        nothing to draw may be left out, so the extent, not the count)."""
        cols = self.models.get("overview", {}).get("columns") or {"band": [], "x": []}

        def extent(band: int) -> float:
            xs = [x for x, b in zip(cols["x"], cols["band"]) if b == band]
            return max(xs) - min(xs) if xs else 0.0
        return extent(BAND[name]) / max(1e-9, extent(BAND["track"]))

    def status(self) -> str:
        return re.sub(r"<[^>]+>", " ", str(self.models.get("status", {}).get("text", ""))).strip()[:200]


async def open_page(http_url: str, ws_url: str, arguments: dict) -> tuple[PageSession, float]:
    session = PageSession(http_url, ws_url, arguments)
    await session.get_page()
    await session.open()
    return session, time.perf_counter() - session.t0


async def first_view(http_url, ws_url, arguments, step: int, timeout: float) -> dict:
    """A session at a coordinate (no selection): the page, the detail view there, the track band; then
    "go to" another coordinate from the page."""
    out: dict = {}
    s, out["document_s"] = await open_page(http_url, ws_url, arguments)
    try:
        out["page_s"] = await s.until(s.page_built, timeout)
        out["at_pos_s"] = await s.until(lambda: s.at(step), timeout)
        out["track_band_s"] = await s.until(lambda: s.band("track"), timeout)
        out["status"] = s.status()
        return out
    finally:
        s.close()


async def go_to(http_url, ws_url, arguments, text: str, step: int, timeout: float) -> dict:
    """From a built page: type ``text`` into "go to"; seconds until the detail view is there and its
    traces were redrawn after."""
    out: dict = {}
    s, out["document_s"] = await open_page(http_url, ws_url, arguments)
    try:
        out["page_s"] = await s.until(s.page_built, timeout)          # a second session: the project open
        if out["page_s"] is None:
            return {**out, "error": "page not built", "status": s.status()}
        await s.until(lambda: s.band("track"), timeout)          # settled
        t0 = time.perf_counter()
        await s.set_value("goto", text)
        moved = await s.until(lambda: s.at(step) and s.changed.get("traces", 0) > t0, timeout)
        out["go_to_s"] = None if moved is None else time.perf_counter() - t0
        out["status"] = s.status()
        return out
    finally:
        s.close()


async def one_match(http_url, ws_url, arguments, timeout: float) -> dict:
    """A session with a brush and a threshold: the page, the n(t) band of S, the first match rows (kept
    as ``rows``), the matches' band."""
    out: dict = {}
    s, out["document_s"] = await open_page(http_url, ws_url, arguments)
    try:
        out["page_s"] = await s.until(s.page_built, timeout)
        out["rows_s"] = await s.until(lambda: bool(s.rows), timeout)
        out["rows"] = list(s.rows)
        out["nt_band_s"] = await s.until(lambda: s.band("n(t)"), timeout)
        out["match_band_s"] = await s.until(lambda: s.band("matches"), timeout)
        out["nt_share"] = s.band_share("n(t)")
        out["status"] = s.status()
        return out
    finally:
        s.close()


# --- processes and memory ------------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    try:
        import psutil
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        found, todo = [pid], [pid]
        while todo:
            kids = child_pids(todo.pop())
            found += kids
            todo += kids
        return found
    except Exception:                       # the process ended
        return []


def role(pid: int, root: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if pid == root:
        return "main"
    if "spawn_main" in cmd:
        return "dask worker"
    return "resource tracker" if "resource_tracker" in cmd else cmd[:40]


class MemorySampler:
    """Peak RSS (MiB) of every process under ``pid``, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.roles = pid, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for p in process_tree(self.pid):
                rss = process_rss_mb(p)
                if rss:
                    self.peak[p] = max(self.peak.get(p, 0.0), rss)
                    self.roles.setdefault(p, role(p, self.pid))

    def now(self) -> dict[int, float]:
        return {p: process_rss_mb(p) for p in process_tree(self.pid)}

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        named, workers = {}, 0
        for p, mib in sorted(self.peak.items()):
            r = self.roles.get(p, "?")
            if r == "dask worker":
                workers += 1
                r = f"dask worker {workers}"
            named[f"{r} (pid {p})"] = round(mib)
        return named


def env_for(cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PYTHONUNBUFFERED": "1", "LSTMVIS_CACHE_DIR": str(cache)}


def cli_match(project: Path, source: str, region: str, threshold: float, dask: str, cache: Path,
              timeout: float) -> tuple[list[tuple], float, dict]:
    """``lstmvis match --dask`` for one query: its rows, its wall time, its processes' peak memory."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gpu_matcher.cli", "match", str(project), "--source", source,
                             "--threshold", str(threshold), "--region", region, "--dask", dask,
                             "--backend", "numpy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(cache))
    sampler = MemorySampler(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        memory = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"lstmvis match failed: {stderr.strip().splitlines()[-1:]}")
    out = json.loads(stdout)
    rows = [tuple(m[k] for k in ROW_KEYS) for m in out["matches"]]
    return rows, time.perf_counter() - t0, memory


class Server:
    """``lstmvis serve DATA --dask ...`` on 127.0.0.1, a free port; its log's last lines kept."""

    def __init__(self, data: Path, dask: str, cache: Path, timeout: float):
        self.port = free_port()
        self.log: deque[str] = deque(maxlen=40)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "gpu_matcher.cli", "serve", str(data), "--port",
                                      str(self.port), "--address", "127.0.0.1", "--dask", dask, "--backend",
                                      "numpy"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env_for(cache))
        self.sampler = MemorySampler(self.proc.pid)
        deadline = time.time() + timeout
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            if "open http" in line:
                break
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("the server did not start: " + " | ".join(self.log))
        else:
            self.stop()
            raise RuntimeError("the server exited: " + " | ".join(self.log))
        self.ready_s = time.perf_counter() - t0
        threading.Thread(target=lambda: [self.log.append(x.rstrip()) for x in self.proc.stdout], daemon=True).start()
        self.http_url, self.ws_url = f"http://127.0.0.1:{self.port}/", f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> dict[str, float]:
        memory = self.sampler.stop()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return memory


# --- the run ---------------------------------------------------------------------------------------------
def pick_brush(project_dir: Path, step: int, threshold: float, width: int) -> tuple[int, int, int]:
    """A brush of ``width`` steps at or after ``step`` that selects 2..8 cells (S is a few cells)."""
    from gpu_matcher.engine import Engine
    from gpu_matcher.project import open_project

    project = open_project(project_dir)
    try:
        engine = Engine(project, backend="numpy")
        source = project.default_source
        for a in range(step, step + 200 * width, width):
            cells = engine.select(source, a, a + width - 1, threshold).cells
            if 2 <= len(cells) <= 8:
                return a, a + width - 1, len(cells)
        return step, step + width - 1, len(engine.select(source, step, step + width - 1, threshold).cells)
    finally:
        project.close()


def in_process_overviews(project_dir: Path, source: str, genome, brush: tuple[int, int, int], threshold: float,
                         bins: int = 1000) -> dict[str, float]:
    """What the overview strip costs without the server: n(t) of the brush's S, the interval track and
    the dense track over the whole of chr1 in ``bins`` bins (the app's strip is the select view's width)."""
    from gpu_matcher.engine import Engine
    from gpu_matcher.project import open_project

    project = open_project(project_dir)
    try:
        engine = Engine(project, backend="numpy")
        cells = engine.select(source, brush[0], brush[1], threshold).cells
        a, b = genome.span("chr1")
        out = {}
        for what, run in ((f"n(t) of {len(cells)} cells",
                           lambda: engine.overview(source, cells, threshold, a, b, bins)),
                          ("interval track", lambda: project.meta["peaks"].overview(a, b, bins)),
                          ("dense track", lambda: project.meta["pred"].overview(a, b, bins))):
            t0 = time.perf_counter()
            run()
            out[f"overview chr1 ({b - a:,} bases): {what}"] = time.perf_counter() - t0
        return out
    finally:
        project.close()


def match_seconds(status: str) -> tuple[float | None, float | None]:
    """(engine, total) seconds of the server's last match, from its status line: the engine's match on
    the cluster, and everything the match job did (word matrix, the hypothesis panel's numbers)."""
    found = re.search(r"matches in (\d+) ms \(engine (\d+) ms", status or "")
    return (float(found.group(2)) / 1e3, float(found.group(1)) / 1e3) if found else (None, None)


def layout_builds(cache: Path, T: int) -> dict[str, float]:
    """Wall seconds of the layout builds, from the cache folders' files (a folder's lock is made when its
    build starts, its layout.json written when it ends): the workers' shards together, and a layout of the
    whole source (the server's own)."""
    spans: dict[str, list[float]] = {}
    for meta in cache.glob("*/layout.json") if cache.exists() else []:
        whole = json.loads(meta.read_text()).get("shape", [0])[0] == T
        lock = meta.parent / ".lock"
        start = lock.stat().st_mtime if lock.exists() else meta.stat().st_mtime
        spans.setdefault("whole source, in the server" if whole else "the workers' shards",
                         []).extend([start, meta.stat().st_mtime])
    return {k: max(v) - min(v) for k, v in spans.items()}


def host_layouts(cache: Path, T: int) -> list[float]:
    """GiB of every layout of the WHOLE source in the cache: one built in the server process (the
    workers' are per shard)."""
    found = []
    for meta in cache.glob("*/layout.json") if cache.exists() else []:
        if json.loads(meta.read_text()).get("shape", [0])[0] == T:
            found.append(store_bytes(meta.parent) / 2**30)
    return found


def report(bases: int, dim: int, dask: str, build_s: dict, disk: dict, ready_s: float, view: dict, moved: dict,
           queries: list[dict], served: list[dict], memory: dict, overview: dict, loads: tuple) -> None:
    """The measured figures, then the 2.3 x 10^9-base projection from the per-base rates."""
    gib = 2**30
    print("\n== measured ==")
    print(f"load average (1 min): {loads[0]:.2f} before the server, {loads[1]:.2f} after the sessions, "
          f"{loads[2]:.2f} at the end (2 cores: other work ran beside this)")
    print(f"conversion (convert-fasta): {bases / build_s['convert-fasta'] / 1e6:.2f} Mbases/s; states written "
          f"(synthetic, not a model) {bases / build_s['add states'] / 1e6:.2f} Msteps/s")
    print("disk: " + ", ".join(f"{k} {v / gib:.3f} GiB" for k, v in disk.items()))
    print(f"server start (--dask {dask}, cluster up): {ready_s:.1f} s; first view (the project's first opening): "
          f"{seconds(view['page_s'])}, detail view at the URL's coordinate {seconds(view['at_pos_s'])}, "
          f"the overview's track band {seconds(view['track_band_s'])}")
    print(f"a second session's page: {seconds(moved.get('page_s'))}; go to a coordinate typed in it: "
          f"{seconds(moved.get('go_to_s'))}")
    for name, q, got in zip(("match 1 (the workers' layouts may still be building)", "match 2 (another brush)"),
                            queries, served):
        equal = got.get("rows") == got.get("cli_rows")
        engine_s, total_s = match_seconds(got.get("status"))
        print(f"{name}, brush {q['brush']} θ={q['threshold']}: page {seconds(got['page_s'])}, rows "
              f"{seconds(got['rows_s'])} ({len(got.get('rows') or [])} rows, equal to lstmvis match: {equal}; "
              f"the server's match job {total_s} s, of which the engine on the cluster {engine_s} s), n(t) band of S "
              f"{seconds(got['nt_band_s'])} (over {100 * got['nt_share']:.0f}% of the contig), matches band "
              f"{seconds(got['match_band_s'])}; lstmvis match "
              f"--dask {dask} wall {got['cli_s']:.1f} s (its cluster's start included)")
    print("peak RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in memory.items()))
    if disk.get("host layouts of the whole source"):
        print(f"the server built a layout of the WHOLE source in its own process (the hypothesis panel's "
              f"corpus scans: no sharded version): {disk['host layouts of the whole source'] / gib:.2f} GiB on disk")

    print(f"\n== projection to {GENOME:.1e} bases (the paper's case), linear from {bases:.0e} ==")
    scale = GENOME / bases
    conv = build_s["convert-fasta"] * scale
    print(f"conversion: {conv / 60:.0f} min on one core (linear: a streamed pass; contigs are independent, "
          f"so processes per contig would divide it)")
    per_base = {k: v / bases for k, v in disk.items() if k != "FASTA"}
    print("disk: " + ", ".join(f"{k} {v * GENOME / gib:.1f} GiB" for k, v in per_base.items())
          + f" (states and layouts are 2·D bytes a base each: D={dim} here; linear in T and D)")
    engine_s = match_seconds(served[-1].get("status"))[0]         # match 2: the workers' layouts built
    if engine_s is not None:
        workers = int(dask.rsplit(":", 1)[-1]) if ":" in dask else 1
        per_1e9 = engine_s * workers * 1e9 / bases
        print(f"a match (match 2: layouts built): {per_1e9:.0f} worker-s per 10^9 steps -> "
              f"{per_1e9 * GENOME / 1e9 / workers:.0f} s on {workers} workers, {per_1e9 * GENOME / 1e9 / 32:.1f} s "
              f"on 32 (linear in T: every shard scans the selected cells; the rounds' latency does not shrink "
              f"with more workers)")
    for k, v in overview.items():
        print(f"{k}: {v:.2f} s -> {v * HG38_CHR1 / genome_chr1(k):.1f} s for a {HG38_CHR1:,}-base contig "
              f"(hg38 chr1; linear in the contig's length{'; and in D: whole rows are read' if 'n(t)' in k else ''})")


def genome_chr1(label: str) -> int:
    return int(re.search(r"\(([\d,]+) bases\)", label).group(1).replace(",", ""))


def seconds(value) -> str:
    return "timed out" if value is None else f"{value:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", type=float, default=1e8)
    ap.add_argument("--dim", type=int, default=32, help="cells of the synthetic state source (float16)")
    ap.add_argument("--dask", default="local:2")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--brush-width", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=900, help="seconds any one wait may take")
    ap.add_argument("--work", help="folder for the files (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the files (default: removed afterwards)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the figures here as JSON")
    ap.add_argument("--first-view-only", action="store_true",
                    help="build, serve, time the first view and a go-to, then stop (no matches)")
    args = ap.parse_args()
    bases = int(args.bases)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_genome_serve_"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (1 min) at the start")
    print(f"genome: {bases:,} synthetic bases, states {args.dim} cells float16 (uncompressed Zarr), backend "
          f"Dask {args.dask} (NumPy on each worker), work folder {work}", flush=True)
    r: dict[str, float] = {}
    try:
        built = build(work, bases, args.dim, args.seed, "auto", states_format="zarr", results=r)
        project, lengths = built["project"], built["lengths"]
        disk = {p.name: store_bytes(p) for p in sorted(project.iterdir())}
        disk["FASTA"] = store_bytes(built["fasta"])
        print(f"conversion: {bases / r['convert-fasta'] / 1e6:.2f} Mbases/s ({r['convert-fasta']:.1f} s); "
              + "; ".join(f"{k} {v:.1f} s" for k, v in r.items() if k != "convert-fasta"), flush=True)
        from gpu_matcher.genome.coords import Genome
        genome = Genome(list(lengths), list(lengths.values()))
        source = "states_synthetic::synthetic"
        mid = lengths["chr1"] // 2
        here, there = genome.parse(f"chr1:{mid:,}")[0], genome.parse(f"chr1:{mid * 3 // 2:,}")[0]
        b1 = pick_brush(project, here, args.threshold, args.brush_width)
        b2 = pick_brush(project, genome.parse(f"chr1:{mid // 5:,}")[0], args.threshold, args.brush_width)
        query = {"project": "project", "pos": genome.format(here), "tracks": "peaks,pred"}
        matches = [{**query, "source": source, "brush": f"{a},{b}", "threshold": str(args.threshold),
                    "pos": genome.format(a)} for a, b, _k in (b1, b2)]

        load0 = os.getloadavg()[0]
        server = Server(work, args.dask, cache, args.timeout)
        print(f"server: ready in {server.ready_s:.1f} s on port {server.port}", flush=True)
        try:
            view = asyncio.run(first_view(server.http_url, server.ws_url, query, here, args.timeout))
            print(f"first view {query}: document {seconds(view['document_s'])}, page {seconds(view['page_s'])}, "
                  f"detail view at {query['pos']} {seconds(view['at_pos_s'])}, overview track band "
                  f"{seconds(view['track_band_s'])}; status: {view['status']!r}", flush=True)
            moved = asyncio.run(go_to(server.http_url, server.ws_url, query, genome.format(there), there,
                                      args.timeout))
            print(f"a second session's page (the project open): {seconds(moved.get('page_s'))}; "
                  f"go to {genome.format(there)} typed in it: {seconds(moved.get('go_to_s'))}; "
                  f"status: {moved.get('status')!r}", flush=True)
            served = []
            for q in [] if args.first_view_only else matches:
                served.append(asyncio.run(one_match(server.http_url, server.ws_url, q, args.timeout)))
                print(f"match {q['brush']} θ={q['threshold']}: {served[-1]}", flush=True)
            idle = server.sampler.now()
        finally:
            memory = server.stop()
        load1 = os.getloadavg()[0]
        print(f"server: peak RSS (MiB) {memory}; after the sessions {[round(v) for v in idle.values()]}", flush=True)
        if args.first_view_only:
            print(f"load average (1 min): {load0:.2f} before the server, {load1:.2f} after the sessions")
            return 0

        # The same queries from the command line, each on its own local cluster (layouts in the cache).
        for (a, b, k), q, got in zip((b1, b2), matches, served):
            region = genome.format_range(a, b + 1)
            want, wall, cli_memory = cli_match(project, source, region, args.threshold, args.dask, cache,
                                               args.timeout)
            print(f"lstmvis match --region {region} --dask {args.dask}: {len(want)} rows in {wall:.1f} s "
                  f"(k={k}); peak RSS (MiB) {cli_memory}", flush=True)
            got["cli_rows"], got["cli_s"] = want, wall
        builds = layout_builds(cache, bases)
        print("layout builds (wall, from the cache files): " + "; ".join(f"{k} {v:.1f} s" for k, v in builds.items()),
              flush=True)
        host = sum(host_layouts(cache, bases))
        disk["layouts (workers' cache)"] = (store_bytes(cache) if cache.exists() else 0) - host * 2**30
        disk["host layouts of the whole source"] = host * 2**30
        overview = in_process_overviews(project, source, genome, b1, args.threshold)
        print("in one process, the server's reductions alone: " + "; ".join(
            f"{k} {v:.2f} s" for k, v in overview.items()), flush=True)
        load2 = os.getloadavg()[0]
        report(bases, args.dim, args.dask, r, disk, server.ready_s, view, moved, matches, served, memory,
               overview, (load0, load1, load2))
        if args.out:
            for got in served:
                got["rows_equal"] = got.get("rows") == got.pop("cli_rows", None)
                got["rows"] = len(got.get("rows") or [])
            Path(args.out).write_text(json.dumps({
                "machine": machine(), "bases": bases, "dim": args.dim, "dask": args.dask, "build_s": r,
                "disk_bytes": disk, "server_ready_s": server.ready_s, "first_view": view, "go_to": moved,
                "matches": list(zip(matches, served)), "peak_rss_mib": memory, "overview_s": overview,
                "load": [load0, load1, load2], "layout_builds_s": builds}, indent=1, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
