"""Trainings side by side: a pool of worker processes, each on its share of
the cores.

Small heads use a second core poorly within one process (on 2 cores a
BiLSTM epoch takes 6.0 s on one thread and 4.8 s on two; a conv head 1.8 s
on either), so independent trainings (models, leaky twins, LOSO folds,
baselines) run in separate processes, one torch thread each. Every job is
seeded by its own config, so results do not depend on which worker ran it
or when. With one worker, jobs run in this process, in order.

Workers' log records travel to this process's handlers through a queue
(the logging cookbook's recipe); their per-epoch progress bars are not
shown, the caller counts finished jobs instead.
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Two workers where there are at least two cores (the demo's default)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class _Forward(logging.Handler):
    """Hands a worker's record to the logger of the same name here."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _die_with_parent(parent: int) -> None:
    """A worker whose parent is killed (SIGKILL leaves no time to shut the
    pool down) gets SIGTERM instead of idling on forever (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # no prctl here
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(queue, level: int, threads: int, parent: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    _die_with_parent(parent)
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # BLAS and OpenMP pools too (scikit-learn's baselines), not only torch's
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(level)


class Jobs:
    """`submit(fn, *args, **kw) -> Future`; a context manager. `fn` and its
    arguments must pickle (module-level functions, configs, manifests)."""

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._pool: ProcessPoolExecutor | None = None
        self._listener: logging.handlers.QueueListener | None = None

    def __enter__(self) -> Jobs:
        if self.workers > 1:
            ctx = mp.get_context("spawn")  # fork would copy torch's thread pool state
            queue = ctx.Queue()
            self._listener = logging.handlers.QueueListener(queue, _Forward())
            self._listener.start()
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=(queue, logging.getLogger().getEffectiveLevel(), self.threads, os.getpid())
            )
            log.info("training in %d worker processes, %d torch thread(s) each", self.workers, self.threads)
        return self

    def submit(self, fn: Callable, *args, **kw) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args, **kw)
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kw))
        except Exception as e:
            fut.set_exception(e)
        return fut

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
            self._pool = None
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
