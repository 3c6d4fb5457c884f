"""Scale-out: join (or start) a Ray cluster, and score customer batches locally or as Ray tasks.

A library module, no stage: visual_features.py (--engine ray) and final.py use it. It imports Ray
only when the Ray engine is asked for, so the local path never starts Ray.

    from fde.scale_out import score_batches
    recs = score_batches(hybrid, customers["customer_id"], score_one_batch, engine="ray")

On Ray the fitted model goes into the object store once (ray.put) and every task reads it from
there; the batches' results come back in the customers' order, whatever order the tasks finish in.
"""
from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from fde.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # the repo: its stages and the fde package
BATCH_CUSTOMERS = 100_000  # customers per batch: bounds each task's memory (~1 GB for the hybrid at 100k)
# a cost, not a behaviour: batches scored at once by the local engine (threads of this process). Polars,
# LightGBM and NumPy release the GIL, so a second batch uses the core the first leaves idle in its
# single-threaded steps (1.25x on 2 cores at full scale: bench/bench_threads.py); each holds its pool in memory.
LOCAL_THREADS = 2
ENGINES = ("local", "ray")
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# What a cluster's workers need of this repo is its code: never upload data, images, results or venvs.
RAY_EXCLUDES = [".git", ".venv", "data", "data_*", "images", "bench/results", "test-artifacts", "*.npy",
                "*.npz", "*.parquet", "*.csv", "*.jpg"]


REACH_SECONDS = 5  # a cluster's head answers a TCP connect at once; Ray's own connect retries for minutes


def cannot_reach(address: str, why: str) -> UserError:
    return UserError(f"cannot reach a Ray cluster at {address!r} ({why}): start one with `ray start --head` "
                     "or check --ray-address; nothing was computed")


def check_reachable(address: str | None) -> None:
    """A one-line error within seconds when `address` (HOST:PORT or ray://HOST:PORT) does not answer.

    Without this, ray.init retries an unreachable GCS for minutes. None (start Ray here) and 'auto'
    (ray finds the address itself, and says at once when there is none) are not probed.
    """
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: give auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise cannot_reach(address, exc.strerror or type(exc).__name__) from None


def connect_ray(address: str | None = None, num_cpus: int | None = None):
    """The ray module, connected: to `address` (auto, ray://HOST:10001), or to a new Ray on this machine.

    A new local Ray has no dashboard and binds to 127.0.0.1 only. On a cluster the repo's code is
    shipped to the workers as the job's working_dir; image and data paths must be readable on every
    node (shared storage), as they are named on the driver.
    """
    if address is None:
        # A Ray started here serves this machine only: with "clusters disabled" Ray takes 127.0.0.1 as
        # the node's address, so the GCS, raylet and workers listen on loopback, not on every interface.
        os.environ[LOCAL_ONLY_ENV] = "0"
    try:
        import ray
        import ray._private.ray_constants as ray_constants
    except ImportError:
        raise UserError("the Ray engine needs ray: `pip install 'ray[data]'` (it is in requirements.txt)") from None
    if ray.is_initialized():
        return ray
    check_reachable(address)
    try:
        if address is None:
            ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: the flag above, if ray came first
            pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
            ray.init(num_cpus=num_cpus, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, log_to_driver=True)
        else:
            ray.init(address=address, runtime_env={"working_dir": str(ROOT), "excludes": RAY_EXCLUDES})
    except ConnectionError as exc:
        raise cannot_reach(address, str(exc)) from None
    return ray


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Offsets of the customer batches."""
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    return list(range(0, n, batch_size))


def _score(model: Any, score_batch: Callable, batch: pl.DataFrame) -> pl.DataFrame:
    return score_batch(model, batch)


def score_batches(model: Any, customers: pl.Series, score_batch: Callable[[Any, pl.DataFrame], pl.DataFrame],
                  engine: str = "local", batch_size: int = BATCH_CUSTOMERS, ray_address: str | None = None,
                  show_progress: bool = True,
                  sink: Callable[[pl.DataFrame], None] | None = None,
                  threads: int = 1) -> pl.DataFrame | None:
    """score_batch(model, batch of customers as a one-column frame) over every batch, concatenated in order.

    engine="local" scores here, `threads` batches at a time (score_batch must then be safe to call from
    several threads at once); engine="ray" runs one Ray task per batch, with the model put in the
    object store once. Both return the same frame, batch after batch in the customers' order; or, with
    `sink`, hand it each batch's frame in that order as soon as it can, keep none, and return None.
    """
    from tqdm.auto import tqdm

    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose {' or '.join(ENGINES)}")
    if threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    frame = customers.to_frame()
    starts = batch_starts(frame.height, batch_size)
    parts = []
    keep = sink or parts.append
    if not starts:
        keep(score_batch(model, frame))  # no customers: the scorer's own empty frame, with its schema
        return None if sink else parts[0]
    bar = tqdm(total=len(starts), desc=f"score ({engine})", unit="batch", disable=not show_progress)
    if engine == "local":
        # at most `threads` batches in flight, handed on in the customers' order
        with ThreadPoolExecutor(max_workers=threads) as pool:
            running = deque()
            for start in starts:
                running.append(pool.submit(score_batch, model, frame.slice(start, batch_size)))
                if len(running) >= threads:
                    keep(running.popleft().result())
                    bar.update(1)
            while running:
                keep(running.popleft().result())
                bar.update(1)
        bar.close()
        return None if sink else pl.concat(parts)

    ray = connect_ray(ray_address)
    model_ref = ray.put(model)  # once: every task gets the same object, read from its node's store
    task = ray.remote(num_cpus=1)(_score)
    pending = {task.remote(model_ref, score_batch, frame.slice(start, batch_size)): i for i, start in enumerate(starts)}
    done, handed = {}, 0
    waiting = list(pending)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        done[pending[ready[0]]] = ready[0]
        bar.update(1)
        while handed in done:  # the customers' order, not finishing order
            keep(ray.get(done.pop(handed)))
            handed += 1
    bar.close()
    return None if sink else pl.concat(parts)
