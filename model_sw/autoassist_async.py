"""Asynchronous Boss/Assistant plumbing: one lock, bounded queues, exact accounting.

Shared state (all under one ``threading.Condition``):

* ``cursor``   the not-yet-decided instances of the current epoch (a permutation);
* ``inflight`` the chunk (up to ``batch`` instances) the worker took from the cursor
               and is deciding right now, with a token;
* ``buffer``   instances the Assistant decided to keep, not yet a full batch;
* ``ready``    filtered batches for the Boss, at most ``queue_size`` (20, official);
* ``reports``  per-instance (index, loss, margin) reports from the Boss, at most
               ``queue_size`` batches.

The worker (a thread, or called inline in ``sync`` mode) repeatedly: takes the
pending reports and one chunk from the cursor (only while ``ready`` has room),
trains the Assistant on the reports and decides the chunk *outside* the lock,
then commits under the lock: shrunk instances are counted, kept ones go to
``buffer``, full batches move to ``ready``.

The Boss never waits (:meth:`Feeder.next_batch`): it takes a filtered batch if one
is ready, else a *plain* batch straight from the cursor (unfiltered).  When the
cursor is empty it takes the worker's partial ``buffer`` and finally steals the
``inflight`` chunk (the worker's later commit sees the token changed and discards
its decisions).  So every instance of an epoch is exactly once either trained on
(filtered or plain) or counted as shrunk; :meth:`Feeder.end_epoch` checks
``trained_filtered + trained_plain + shrunk == epoch size`` and raises
:class:`AccountingError` otherwise.

Empty batch after shrinking: if a whole chunk of ``batch`` candidates is shrunk,
the one with the highest ``p`` is kept anyway (counted in ``forced_keep``, trained
as a filtered instance).  So the Boss trains at least one instance per ``batch``
candidates whatever the Assistant says (``base_prob = 0`` and ``p = 0`` still
make progress), and the counts still add up.

Worker death: any exception in the worker is caught; it is recorded (``error``,
``died_at_epoch``), logged, the instances it held (inflight chunk and buffer) go
back to the front of the cursor, and the worker stops.  From then on the Boss
trains on plain batches; reports are no longer queued.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from .autoassist_assistant import LossEMA, check_base_prob, shrink_keep

log = logging.getLogger("model_sw.autoassist")


class AccountingError(RuntimeError):
    """Instances of an epoch went missing or were counted twice."""


@dataclass
class EpochCounts:
    epoch: int = 0
    size: int = 0
    trained_filtered: int = 0
    trained_plain: int = 0
    shrunk: int = 0
    forced_keep: int = 0
    filtered_batches: int = 0
    plain_batches: int = 0

    @property
    def trained(self) -> int:
        return self.trained_filtered + self.trained_plain


class Feeder:
    def __init__(self, assistant, features, y_train, batch: int, base_prob: float = 0.3,
                 queue_size: int = 20, ema_decay: float = 0.75, seed: int = 0,
                 threaded: bool = True, fail_after: int | None = None):
        self.base_prob = check_base_prob(base_prob)
        if batch < 1 or queue_size < 1:
            raise ValueError(f"batch={batch} and queue_size={queue_size} must be >= 1")
        self.assistant, self.features = assistant, features
        self.y = np.asarray(y_train, dtype=np.int64)
        self.batch, self.queue_size = batch, queue_size
        self.ema = LossEMA(ema_decay)
        self.rng = np.random.default_rng(seed + 7919)
        self.fail_after = fail_after  # fault injection (tests): raise in the worker's n-th chunk
        self.cv = threading.Condition()
        self.cursor: deque = deque()
        self.inflight: tuple[int, np.ndarray] | None = None
        self.buffer: list[int] = []
        self.ready: deque = deque()
        self.reports: deque = deque()
        self.reports_dropped = 0
        self.counts = EpochCounts()
        self.history: list[dict] = []
        self.epoch = -1
        self.alive = True
        self.error: str | None = None
        self.died_at_epoch: int | None = None
        self.chunks = 0
        self._token = 0
        self.quality: list[tuple[float, bool]] = []  # (p before training, label) for every reported instance
        self.decisions = 0
        self.assistant_trained = 0
        self.threaded = threaded
        self._stop = False
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="autoassist-worker", daemon=True)
            self._thread.start()

    # -- Boss side (never waits on the worker) ---------------------------------
    def start_epoch(self, perm):
        with self.cv:
            if self.cursor or self.ready or self.buffer or self.inflight is not None:
                raise AccountingError("start_epoch while the previous epoch still has instances")
            self.epoch += 1
            self.counts = EpochCounts(epoch=self.epoch, size=len(perm))
            self.cursor.extend(int(i) for i in perm)
            self.cv.notify_all()

    def next_batch(self):
        """``(indices, kind)`` with kind 'filtered' or 'plain', or None when the epoch is done."""
        if not self.threaded and self.alive:
            self.pump()
        with self.cv:
            c = self.counts
            if self.ready:
                b = self.ready.popleft()
                c.trained_filtered += len(b)
                c.filtered_batches += 1
                self.cv.notify_all()
                return np.array(b, dtype=np.int64), "filtered"
            if self.cursor:
                n = min(self.batch, len(self.cursor))
                b = [self.cursor.popleft() for _ in range(n)]
                c.trained_plain += n
                c.plain_batches += 1
                return np.array(b, dtype=np.int64), "plain"
            if self.buffer:  # the tail of the epoch: the worker's partial batch of kept instances
                b, self.buffer = self.buffer, []
                c.trained_filtered += len(b)
                c.filtered_batches += 1
                return np.array(b, dtype=np.int64), "filtered"
            if self.inflight is not None:  # steal the chunk being decided; the worker's commit is dropped
                _, b = self.inflight
                self.inflight = None
                c.trained_plain += len(b)
                c.plain_batches += 1
                return np.array(b, dtype=np.int64), "plain"
            return None

    def end_epoch(self) -> dict:
        with self.cv:
            c = self.counts
            if self.cursor or self.ready or self.buffer or self.inflight is not None:
                raise AccountingError(f"epoch {c.epoch} ended with instances left")
            if c.trained + c.shrunk != c.size:
                raise AccountingError(f"epoch {c.epoch}: trained {c.trained} + shrunk {c.shrunk} "
                                      f"!= {c.size} instances")
            d = asdict(c)
            self.history.append(d)
            return d

    def report(self, idx, losses, margins):
        """The Boss's per-instance losses (non-blocking; dropped and counted if the queue is full)."""
        with self.cv:
            if not self.alive:
                return
            if len(self.reports) >= self.queue_size:
                self.reports_dropped += 1
                return
            self.reports.append((np.asarray(idx), np.asarray(losses, dtype=np.float64),
                                 np.asarray(margins, dtype=np.float64)))
            self.cv.notify_all()

    def close(self):
        with self.cv:
            self._stop = True
            self.cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # -- worker side -----------------------------------------------------------
    def _loop(self):
        while True:
            with self.cv:
                if self._stop:
                    return
            try:
                did = self.work_once()
            except BaseException as e:  # noqa: BLE001 - any failure kills only the worker
                self._die(e)
                return
            if not did:
                with self.cv:
                    if not self._stop:
                        self.cv.wait(timeout=0.01)

    def pump(self):
        """Sync mode: work until a filtered batch is ready or nothing is left to do."""
        try:
            while self.alive:
                with self.cv:
                    if self.ready:
                        return
                if not self.work_once():
                    return
        except BaseException as e:  # noqa: BLE001
            self._die(e)

    def _die(self, e: BaseException):
        with self.cv:
            self.alive = False
            self.error = f"{type(e).__name__}: {e}"
            self.died_at_epoch = self.epoch
            back = list(self.buffer)
            if self.inflight is not None:
                back += [int(i) for i in self.inflight[1]]
                self.inflight = None
            self.buffer = []
            self.cursor.extendleft(reversed(back))
            self.reports.clear()
            self.cv.notify_all()
        log.warning("AutoAssist worker died in epoch %s (%s); the Boss continues with plain batches",
                    self.died_at_epoch, self.error)

    def work_once(self) -> bool:
        with self.cv:
            reports = list(self.reports)
            self.reports.clear()
            chunk = None
            if self.cursor and len(self.ready) < self.queue_size:
                n = min(self.batch, len(self.cursor))
                chunk = np.array([self.cursor.popleft() for _ in range(n)], dtype=np.int64)
                self._token += 1
                token = self._token
                self.inflight = (token, chunk)
        if not reports and chunk is None:
            return False
        # -- outside the lock: train on the reports, decide the chunk
        for idx, losses, margins in reports:
            labels = self.ema.update(losses)
            f = self.features(idx)
            p_before = self.assistant.prob(f, self.y[idx])
            self.quality.extend(zip(p_before.tolist(), labels.tolist()))
            self.assistant.train_step(f, self.y[idx], labels)
            self.assistant_trained += len(idx)
            self.features.update(idx, losses, margins)
        if chunk is None:
            return True
        self.chunks += 1
        if self.fail_after is not None and self.chunks > self.fail_after:
            raise RuntimeError(f"injected Assistant failure at chunk {self.chunks}")
        p = self.assistant.prob(self.features(chunk), self.y[chunk])
        u = self.rng.random(len(chunk))
        keep = shrink_keep(p, u, self.base_prob)
        forced = 0
        if not keep.any():
            keep[int(np.argmax(p))] = True
            forced = 1
        kept = [int(i) for i in chunk[keep]]
        with self.cv:
            if self.inflight is None or self.inflight[0] != token:
                return True  # the Boss took this chunk as a plain batch
            self.inflight = None
            self.decisions += len(chunk)
            self.counts.shrunk += int((~keep).sum())
            self.counts.forced_keep += forced
            self.buffer.extend(kept)
            while len(self.buffer) >= self.batch and len(self.ready) < self.queue_size:
                self.ready.append(self.buffer[:self.batch])
                self.buffer = self.buffer[self.batch:]
            self.cv.notify_all()
        return True
