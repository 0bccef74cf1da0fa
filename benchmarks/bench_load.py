"""Load benchmark: N concurrent browser-like sessions against one `lstmvis serve`, on localhost only.

Each session opens the app at a scenario URL (project, source, brush, threshold) the way BokehJS does:
a WebSocket with a fresh session token (the server builds the session's document; ``--page-get``: first the
HTML page, as a browser loads it, and the WebSocket with that page's token), PULL-DOC, then the
PATCH-DOC messages the server pushes, kept as JSON (``RawSession``). It waits for the match rows, checks
them against ``lstmvis match`` for the same query, then moves the threshold slider (``value`` and
``value_throttled``, as a released mouse sends) and waits for the new rows.
Times are wall-clock from the session's first request to the rows on the client; the server's CPU time
per session and the machine's load average are printed with them (on a shared machine wall time moves
with other work, CPU time much less). The server's RSS is sampled before the load, during it (peak) and
after every session closed and the server dropped them.

Bounded by construction: a fixed number of sessions per round, each with a deadline; localhost only.
All sessions run in one asyncio loop of this process, on the same machine: its CPU is part of what is
measured (little: it parses JSON, it builds no Bokeh models; its own CPU a session is printed too).

    python benchmarks/bench_load.py                       # the bundled demo, 5/10/20/40 sessions
    python benchmarks/bench_load.py --sessions 40 --num-procs 2 --page-get   # two processes, browser's order
    python benchmarks/bench_load.py --data DIR --project P --source S --brush 100,102 --sessions 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "gpu_matcher.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=True)


def expected_rows(project_dir: Path, source: str, brush: tuple[int, int], threshold: float) -> list[tuple]:
    """The answer of ``lstmvis match`` for the app's default query (top 50, distinct)."""
    out = json.loads(cli("match", str(project_dir), "--source", source, "--threshold", str(threshold),
                         "--start", str(brush[0]), "--end", str(brush[1]), "--backend", "numpy").stdout)
    return [(m["start"], m["end"], m["length"], m["inter"], m["union"]) for m in out["matches"]]


def decode_columns(data, buffers, keys) -> dict[str, list]:
    """A ColumnDataSource's ``data`` as sent by the server (a map of plain lists or ndarrays, inline in
    base64 or as binary buffers) -> ``{key: list}`` for ``keys``."""
    import base64

    import numpy as np

    def column(value):
        if isinstance(value, dict) and value.get("type") == "ndarray":
            array = value["array"]                    # bytes: inline base64, or a buffer sent after
            if array.get("type") == "ref":
                raw = buffers[array["id"]]
            elif isinstance(array.get("data"), dict):
                raw = buffers[array["data"]["id"]]
            else:
                raw = base64.b64decode(array["data"])
            return np.frombuffer(raw, dtype=value["dtype"]).tolist()
        return list(value)

    entries = data.get("entries", data) if isinstance(data, dict) and data.get("type") == "map" else data
    if isinstance(entries, list):
        entries = dict(entries)
    return {k: column(entries.get(k, [])) for k in keys}


class RawSession:
    """A browser-like Bokeh WebSocket client that keeps the document as JSON: it pulls it once, then reads
    the PATCH-DOC messages the server pushes (a Python ``bokeh.client`` session would turn the whole
    document into Python models, seconds of client CPU per session on this machine)."""

    def __init__(self, ws_url: str, arguments: dict, token: str | None = None):
        self.ws_url, self.arguments = ws_url, arguments
        self.token = token                  # a session a page GET made (else a fresh one is asked for)
        self.ids: dict[str, str] = {}
        self.rows: list[tuple] = []

    async def open(self) -> None:
        from bokeh.util.token import generate_jwt_token, generate_session_id
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect
        from urllib.parse import urlencode

        token = self.token or generate_jwt_token(generate_session_id())
        self.ws = await websocket_connect(HTTPRequest(f"{self.ws_url}?{urlencode(self.arguments)}"),
                                          subprotocols=["bokeh", token], max_message_size=64 << 20)
        await self.read()                                    # ACK
        await self.send("PULL-DOC-REQ", {})
        while True:
            header, content, buffers = await self.read()
            if header["msgtype"] == "PULL-DOC-REPLY":
                break
        self.find(content["doc"], buffers)

    async def send(self, msgtype: str, content: dict) -> None:
        import uuid
        await self.ws.write_message(json.dumps({"msgid": uuid.uuid4().hex, "msgtype": msgtype}))
        await self.ws.write_message("{}")
        await self.ws.write_message(json.dumps(content))

    async def read(self):
        header = json.loads(await self.ws.read_message())
        await self.ws.read_message()                          # metadata
        content = json.loads(await self.ws.read_message())
        buffers = {}
        for _ in range(header.get("num_buffers", 0)):
            ref = json.loads(await self.ws.read_message())["id"]
            buffers[ref] = await self.ws.read_message()
        return header, content, buffers

    def find(self, node, buffers) -> None:
        """Note the ids of the models named ``matches`` and ``threshold``, and the rows if present."""
        if isinstance(node, dict):
            attrs = node.get("attributes")
            if node.get("type") == "object" and isinstance(attrs, dict) and attrs.get("name") in ("matches",
                                                                                                  "threshold"):
                self.ids[attrs["name"]] = node["id"]
                if attrs["name"] == "matches" and "data" in attrs:
                    self.set_rows(attrs["data"], buffers)
            for value in node.values():
                self.find(value, buffers)
        elif isinstance(node, list):
            for value in node:
                self.find(value, buffers)

    def set_rows(self, data, buffers) -> None:
        cols = decode_columns(data, buffers, ("start", "end", "length", "inter", "union"))
        self.rows = list(zip(*cols.values()))

    async def wait_rows(self, want: list[tuple], timeout: float) -> bool:
        import asyncio

        async def until():
            while self.rows != want:
                header, content, buffers = await self.read()
                if header["msgtype"] != "PATCH-DOC":
                    continue
                for event in content.get("events", []):
                    if event.get("kind") == "RootAdded":             # a page built after its first pull
                        self.find(event, buffers)
                        continue
                    if event.get("model", {}).get("id") != self.ids.get("matches"):
                        if event.get("kind") == "ModelChanged" and event.get("attr") == "children":
                            self.find(event.get("new"), buffers)     # the page put into its shell
                        continue
                    if event.get("kind") == "ColumnDataChanged":
                        self.set_rows(event["data"], buffers)
                    elif event.get("kind") == "ModelChanged" and event.get("attr") == "data":
                        self.set_rows(event["new"], buffers)
        try:
            await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def set_threshold(self, value: float) -> None:
        model = {"id": self.ids["threshold"]}
        await self.send("PATCH-DOC", {"events": [
            {"kind": "ModelChanged", "model": model, "attr": "value", "new": value},
            {"kind": "ModelChanged", "model": model, "attr": "value_throttled", "new": value}]})

    def close(self) -> None:
        self.ws.close()


async def page_token(ws_url: str, args: dict) -> str:
    """GET the page as a browser does (the server makes the session and starts building it) -> its token."""
    import re
    from urllib.parse import urlencode

    from tornado.httpclient import AsyncHTTPClient

    url = ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/?" + urlencode(args)
    page = (await AsyncHTTPClient().fetch(url, request_timeout=600)).body.decode()
    return re.search(r'"token":"([^"]+)"', page).group(1)


async def one_session(ws_url: str, args: dict, want1: list[tuple], theta2: float, want2: list[tuple],
                      timeout: float, page_get: bool = False) -> dict:
    import time
    record = {"first": None, "change": None, "ok1": False, "ok2": False, "error": None}
    t0 = time.perf_counter()
    session = None
    try:
        session = RawSession(ws_url, args, await page_token(ws_url, args) if page_get else None)
        await session.open()
        record["ok1"] = await session.wait_rows(want1, timeout)
        record["first"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        await session.set_threshold(theta2)
        record["ok2"] = await session.wait_rows(want2, timeout)
        record["change"] = time.perf_counter() - t1
    except Exception as exc:                                 # reported, never hidden
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if session is not None and getattr(session, "ws", None) is not None:
            session.close()
    return record


def run_sessions(ws_url: str, args: dict, want1, theta2, want2, n: int, timeout: float,
                 page_get: bool = False) -> list[dict]:
    import asyncio

    async def all_of():
        return await asyncio.gather(*(one_session(ws_url, args, want1, theta2, want2, timeout, page_get)
                                      for _ in range(n)))
    return asyncio.run(all_of())


def process_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _cpu_one(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime
    except (OSError, ValueError, IndexError):
        return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds the server has used (all its threads; with ``--num-procs``, its forked processes too):
    per session, a figure that other work on a shared machine does not inflate the way it does wall time."""
    return _cpu_one(pid) + sum(_cpu_one(c) for c in child_pids(pid))


def rss_mb(pid: int) -> float:
    """RSS of the server: its process and (``--num-procs``) its forked server processes."""
    return process_rss_mb(pid) + sum(process_rss_mb(c) for c in child_pids(pid))


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return f"{statistics.median(values):6.2f} s (p90 {p90:.2f}, max {values[-1]:.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="data folder (default: the bundled demo)")
    ap.add_argument("--project", default="parens")
    ap.add_argument("--source", default="states::cell_layer1")
    ap.add_argument("--brush", default="24,26")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--new-threshold", type=float, default=0.35)
    ap.add_argument("--sessions", default="5,10,20,40", help="comma-separated session counts, one round each")
    ap.add_argument("--timeout", type=float, default=180, help="seconds a session may wait for its rows")
    ap.add_argument("--num-procs", type=int, default=1, help="server processes (lstmvis serve --num-procs)")
    ap.add_argument("--page-get", action="store_true",
                    help="each session first GETs the HTML page, as a browser does (the server makes the session "
                         "there), then opens the WebSocket with that page's token; default: the WebSocket alone")
    args = ap.parse_args()
    if args.data:
        data = Path(args.data)
    else:
        sys.path.insert(0, str(REPO))
        from gpu_matcher.demo import ensure_demo
        data = Path(ensure_demo())
    project_dir = data / args.project if (data / args.project / "lstm.yml").is_file() else data
    brush = tuple(int(x) for x in args.brush.split(","))
    want1 = expected_rows(project_dir, args.source, brush, args.threshold)
    want2 = expected_rows(project_dir, args.source, brush, args.new_threshold)

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "gpu_matcher.cli", "serve", str(data), "--port", str(port),
                               "--backend", "numpy", "--num-procs", str(args.num_procs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env)
    try:
        deadline = time.time() + 120
        for line in server.stdout:
            if "open http" in line or time.time() > deadline:
                break
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()   # drain logs
        time.sleep(2 if args.num_procs != 1 else 0)          # every forked process listening
        url = f"http://127.0.0.1:{port}/"
        query = {"project": args.project, "source": args.source, "brush": args.brush,
                 "threshold": str(args.threshold)}
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.python_version()}; "
              f"server backend numpy, {args.num_procs} process(es); "
              f"{'page GET, then WebSocket' if args.page_get else 'WebSocket only'}; data {data}; query {query}; rows expected {len(want1)} / {len(want2)}")
        ws_url = f"ws://127.0.0.1:{port}/ws"
        # (Several processes: a few warm-up sessions, so that each process has likely opened the project.)
        warm = run_sessions(ws_url, query, want1, args.new_threshold, want2, 1 if args.num_procs == 1
                            else 3 * args.num_procs, args.timeout)
        if warm[0]["error"] or not (warm[0]["ok1"] and warm[0]["ok2"]):
            print(f"warm-up session failed: {warm[0]}")
            return 1
        print(f"warm-up session: first match {warm[0]['first']:.2f} s, threshold change "
              f"{warm[0]['change']:.2f} s, answers equal: {warm[0]['ok1'] and warm[0]['ok2']}")
        for n in (int(x) for x in args.sessions.split(",")):
            time.sleep(2)
            base = rss_mb(server.pid)
            peak = [base]
            done = threading.Event()

            def sample():
                while not done.wait(0.1):
                    peak[0] = max(peak[0], rss_mb(server.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            pids = [server.pid, *child_pids(server.pid)]
            t0, cpu0, own0 = time.perf_counter(), [_cpu_one(p) for p in pids], time.process_time()
            out = run_sessions(ws_url, query, want1, args.new_threshold, want2, n, args.timeout, args.page_get)
            wall, own = time.perf_counter() - t0, time.process_time() - own0
            shares = [_cpu_one(p) - c for p, c in zip(pids, cpu0)]
            cpu = sum(shares)
            done.set()
            # Closed sessions are dropped by the server after its unused-session lifetime (30 s, checked
            # every 10 s); wait for that before reading memory back.
            time.sleep(45)
            after = rss_mb(server.pid)
            errors = [r["error"] for r in out if r["error"]]
            equal = sum(1 for r in out if r["ok1"] and r["ok2"])
            print(f"{n:3d} sessions: first match {spread([r['first'] for r in out if r['first'] is not None])}; "
                  f"threshold change {spread([r['change'] for r in out if r['change'] is not None])}; "
                  f"answers equal to lstmvis match {equal}/{n}; errors {len(errors)}"
                  f"{' (' + errors[0] + ')' if errors else ''}; round {wall:.1f} s, server CPU {cpu / n:.2f} s a "
                  f"session ({' + '.join(f'{c:.1f}' for c in shares if c > 0.05)} s by process), this "
                  f"client {own / n:.2f} s a session; load average {os.getloadavg()[0]:.1f}; server RSS {base:.0f} MB "
                  f"before, {peak[0]:.0f} peak, {after:.0f} after ({100 * (after - base) / base:+.0f}%)")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
