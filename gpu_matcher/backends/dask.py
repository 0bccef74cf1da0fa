"""The distributed backend: the exact match of ``../shared/MATCHING.md`` over shards along T on a Dask
cluster (``distributed``; ``dask-cuda`` workers for GPUs).

The shard protocol, and why its answer is the one-process answer, is in ``gpu_matcher.sharded``. This
module only runs that protocol's shard calls on workers: every call names the source by path
(``SourceLocator``) and carries a few small arrays, never states; a worker opens the source itself and
answers with the backend it was told to use (``auto``: CuPy on a worker with a GPU, else NumPy), keeping
its shard windows' layouts between queries. A shard is placed on the same worker every time (so its
layout is built once), and may run elsewhere when that worker is gone. A call lost with its worker is
rerun by the scheduler; one that still fails with ``KilledWorker`` is resubmitted here, up to
``retries`` times. Calls are pure, so a retried call returns the same rows.

    engine = Engine(project, backend=make_dask_backend("local:4"))       # or "tcp://scheduler:8786"

``distributed`` is imported when a cluster is reached, never by the rest of the package (``lstmvis
match`` without ``--dask`` imports nothing of Dask).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Sequence


from gpu_matcher.errors import ProjectError
from gpu_matcher.sharded import HALO, SHARD_BYTES, BackendSpec, Call, Shard, ShardedBackend, shard_calls

log = logging.getLogger("gpu_matcher")
#: How long a query waits for a worker to register before it gives up.
WAIT_FOR_WORKERS_S = 60

__all__ = ["DaskBackend", "DaskExecutor", "connect", "make_dask_backend", "HALO", "SHARD_BYTES"]


def _distributed():
    try:
        import distributed
    except ModuleNotFoundError:
        raise ProjectError("--dask needs dask.distributed: pip install 'lstmvis-gpu[dask]'") from None
    return distributed


def quiet_level() -> int:
    """distributed logs INFO lines by default; keep them unless ``gpu_matcher`` logs at INFO (``-v``)."""
    return logging.INFO if log.getEffectiveLevel() <= logging.INFO else logging.WARNING


def _quiet_distributed() -> None:
    level = quiet_level()
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def connect(spec: str):
    """A ``distributed.Client`` for ``spec``: ``local`` or ``local:N`` (a local cluster of N worker
    processes, one thread each; N defaults to the CPU count), ``local-cuda`` (dask-cuda's
    ``LocalCUDACluster``, one worker per GPU), a scheduler address (``tcp://host:8786``) or a
    scheduler file (``*.json``). Returns ``(client, cluster or None)``."""
    distributed = _distributed()
    _quiet_distributed()
    spec = str(spec).strip()
    name, _, count = spec.partition(":")
    if name in ("local", "local-cuda"):
        if count and not count.isdigit():
            raise ProjectError(f"--dask {spec!r}: expected local or local:N with N a number of workers")
        n = int(count) if count else None
        if name == "local-cuda":
            try:
                from dask_cuda import LocalCUDACluster
            except ModuleNotFoundError:
                raise ProjectError("--dask local-cuda needs dask-cuda: pip install dask-cuda") from None
            cluster = LocalCUDACluster(**({"n_workers": n} if n else {}))
        else:
            n = n or os.cpu_count() or 1
            if n < 1:
                raise ProjectError(f"--dask {spec!r}: need at least one worker")
            # No Bokeh dashboard; its HTTP server on a free port, not on 8787 (often taken).
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               silence_logs=quiet_level(),
                                               scheduler_kwargs={"dashboard": False,
                                                                 "dashboard_address": ":0"})
        return distributed.Client(cluster), cluster
    try:
        if spec.endswith(".json") and Path(spec).is_file():
            return distributed.Client(scheduler_file=spec, timeout="30s"), None
        return distributed.Client(spec, timeout="30s"), None
    except OSError as exc:
        raise ProjectError(f"--dask {spec!r}: cannot reach the scheduler ({exc})") from None


class DaskExecutor:
    """Runs a round of shard calls on the cluster: the calls of the shards placed on one worker go in
    one task per worker thread (so a round costs a few tasks, not one per shard); gathers the results
    in call order."""

    def __init__(self, client, worker_backend: BackendSpec, retries: int = 2):
        self.client = client
        self.backend_spec = worker_backend
        self.retries = retries
        self._owners: dict[tuple, str] = {}
        self._threads: dict[str, int] = {}
        self._lock = threading.Lock()

    def refresh(self, shards: Sequence[Shard]) -> None:
        """Give every shard a live worker; keep the ones already placed on a live worker."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        if not info:
            # Workers may still be registering (a cluster just started, or one replacing a dead one).
            try:
                self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            except Exception:
                pass
            info = self.client.scheduler_info(n_workers=-1)["workers"]
        workers = sorted(info)
        if not workers:
            raise ProjectError(f"the Dask cluster has no workers (waited {WAIT_FOR_WORKERS_S} s)")
        with self._lock:
            self._threads = {w: max(1, int(info[w].get("nthreads", 1) or 1)) for w in workers}
            load = {w: 0 for w in workers}
            for key, w in list(self._owners.items()):
                if w in load:
                    load[w] += 1
                else:
                    del self._owners[key]
            for sh in shards:
                key = _shard_key(sh)
                if key not in self._owners:
                    w = min(workers, key=lambda x: (load[x], x))
                    self._owners[key] = w
                    load[w] += 1

    def __call__(self, calls: Sequence[Call]) -> list:
        distributed = _distributed()
        batches: dict[tuple[str | None, int], list[int]] = {}
        with self._lock:
            for i, call in enumerate(calls):
                owner = self._owners.get(_shard_key(call[0]))
                lane = call[0].index % self._threads.get(owner, 1)
                batches.setdefault((owner, lane), []).append(i)
        submitted = [(idx, self._submit(owner, [calls[i] for i in idx]))
                     for (owner, _lane), idx in batches.items()]
        results: list = [None] * len(calls)
        for idx, fut in submitted:
            for attempt in range(self.retries + 1):
                try:
                    out = fut.result()
                    break
                except distributed.KilledWorker:
                    if attempt == self.retries:
                        raise
                    log.warning("dask: a worker died running %s; resubmitting it", fut.key)
                    fut = self._submit(None, [calls[i] for i in idx])
            fut.release()
            for i, value in zip(idx, out):
                results[i] = value
        return results

    def _submit(self, owner: str | None, calls: list[Call]):
        op = calls[0][1]
        placement = {"workers": [owner], "allow_other_workers": True} if owner else {}
        return self.client.submit(shard_calls, self.backend_spec, calls, pure=False,
                                  key=f"lstmvis-{op}-{uuid.uuid4().hex[:16]}", **placement)


def _shard_key(shard) -> tuple:
    return (shard.locator, shard.t0, shard.t1)


class DaskBackend(ShardedBackend):
    """The sharded backend with its per-shard backends on a Dask cluster.

    ``prepare(source)`` cuts the source into shards (``shard_steps``, default about ``SHARD_BYTES`` per
    shard, whole Zarr chunks) and warms the workers (each builds its shards' layouts). ``match`` returns
    exactly what ``NumpyBackend().match`` returns in one process.
    """

    name = "dask"

    def __init__(self, client, cluster=None, worker_backend: BackendSpec = "auto",
                 shard_steps: int | None = None, halo: int = HALO, retries: int = 2, warm: bool = True):
        super().__init__(DaskExecutor(client, worker_backend, retries=retries), shard_steps=shard_steps,
                         halo=halo, warm=warm)
        self.client, self.cluster = client, cluster
        self.worker_backend = worker_backend

    def describe(self) -> str:
        workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        wb = self.worker_backend if isinstance(self.worker_backend, str) else "custom"
        return f"dask ({workers} workers, {wb} backend on each, scheduler {self.client.scheduler.address})"

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_dask_backend(spec: str, worker_backend: str = "auto", **kwargs) -> DaskBackend:
    """A ``DaskBackend`` on the cluster named by ``spec`` (see ``connect``); ``close()`` it when done."""
    client, cluster = connect(spec)
    return DaskBackend(client, cluster, worker_backend=worker_backend, **kwargs)
