"""Reading a collection: the read-ahead pipeline that backup, verify and restore's read-back
share, and the tolerant read of a page some of whose ids were deleted meanwhile."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from chroma_backup.core.ports import ChromaPort, Collection
from chroma_backup.errors import ChromaFailure, ChromaUnavailable, Interrupted
from chroma_backup.records import RecordBatch, concat_batches

T = TypeVar("T")
Progress = Callable[[int], None]
# (kind, collection, detail, data): what a run tells whoever listens (the daemon's notifications)
EventSink = Callable[[str, "str | None", str, "dict[str, Any]"], None]


def _no_progress(_: int) -> None:
    pass


@dataclass(frozen=True)
class RunOptions:
    """How a run reads and writes: records per request (0: automatic; reads may be smaller,
    ``read_page``), concurrent readers, a progress callback (records done) and the shutdown event
    that interrupts it between batches."""

    batch_size: int = 0
    read_workers: int = 1
    progress: Progress | None = None
    stop: threading.Event | None = None
    read_page: int = 0  # records per read request (0: as ``batch_size`` says)
    events: EventSink | None = None
    stop_message: str = "interrupted by shutdown"  # what an interruption says (a task: "cancelled")

    def event(self, kind: str, collection: str | None, detail: str, **data: Any) -> None:
        if self.events is not None:
            self.events(kind, collection, detail, data)

    @property
    def read_size(self) -> int:
        """Records per read request wanted (0: the store's default)."""
        return self.read_page or self.batch_size

    def advance(self, records: int) -> None:
        (self.progress or _no_progress)(records)

    def check_stop(self, what: str) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Interrupted(f"{what} {self.stop_message}")


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Lets one store be read while the other is written.  An error in the producer is re-raised in
    the consumer; a consumer that stops early cancels the producer (and closes ``items``).
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    cancel = threading.Event()

    def put(item: Any) -> bool:
        while not cancel.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed over to the consumer, raised there
            put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        cancel.set()
        thread.join()


C = TypeVar("C", bound=Sequence[tuple[str, Any]])  # a chunk: (record id, whatever the caller pairs it with)


def _chunks(pairs: C, size: int) -> Iterator[C]:
    for start in range(0, len(pairs), size):
        yield pairs[start : start + size]  # type: ignore[misc]  # a slice of a list is that list type


def read_batches(
    chroma: ChromaPort, collection: Collection, chunks: Iterable[C], workers: int = 1
) -> Iterator[tuple[C, RecordBatch]]:
    """Each chunk of (id, expected digest) with its records as read from Chroma (ids gone
    meanwhile are absent from the batch), in order, read ahead by ``workers`` concurrent
    requests (the store's connection pool serves every thread).  The chunks are drawn in the
    caller's thread (they may come from the caller's database cursor); at most ``workers`` + 1
    batches are in memory."""

    def fetch(chunk: C) -> RecordBatch:
        return read_tolerantly(chroma, collection, [record_id for record_id, _ in chunk])

    return ordered_map(fetch, chunks, workers)


R = TypeVar("R")


def ordered_map(work: Callable[[C], R], chunks: Iterable[C], workers: int = 1) -> Iterator[tuple[C, R]]:
    """Each chunk with ``work(chunk)``, in order, ``workers`` chunks worked on at once in
    threads; the chunks are drawn in the caller's thread, at most ``workers`` + 1 results are
    held."""
    pending: deque[tuple[C, Future[R]]] = deque()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="chroma-read") as pool:
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(work, chunk)))
                if len(pending) > max(1, workers):
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:  # the consumer stopped early: drop what is not running yet
                future.cancel()


def read_tolerantly(chroma: ChromaPort, collection: Collection, ids: list[str]) -> RecordBatch:
    """The records of ``ids`` that exist.  While another client deletes records, a ``get`` of a
    page fails now and then for an id deleted meanwhile (``Error finding id``, measured: ~0.5%
    of pages under churn): a page that fails is read again in halves, down to single ids, and an
    id that fails alone is looked up; one that no longer exists is left out (the caller records
    it as deleted), one that still exists is damage and its error is raised.  Transient errors
    (the server gone) are never retried here."""
    try:
        return chroma.fetch(collection, ids)
    except ChromaUnavailable:
        raise
    except ChromaFailure:
        if len(ids) > 1:
            half = len(ids) // 2
            return concat_batches(
                [read_tolerantly(chroma, collection, ids[:half]), read_tolerantly(chroma, collection, ids[half:])]
            )
        if chroma.existing_ids(collection, ids):
            raise
        return concat_batches([])


def read_flagging(chroma: ChromaPort, collection: Collection, ids: list[str]) -> tuple[RecordBatch, list[str]]:
    """The records of ``ids`` that can be read, and the ids that exist but cannot be read (a
    damaged index: ``Error finding id`` for a record whose id and metadata are there).  As
    ``read_tolerantly``, a failing page is read again in halves down to single ids; an id gone
    meanwhile is neither."""
    try:
        return chroma.fetch(collection, ids), []
    except ChromaUnavailable:
        raise
    except ChromaFailure:
        if len(ids) > 1:
            half = len(ids) // 2
            first, bad_first = read_flagging(chroma, collection, ids[:half])
            second, bad_second = read_flagging(chroma, collection, ids[half:])
            return concat_batches([first, second]), bad_first + bad_second
        return concat_batches([]), list(chroma.existing_ids(collection, ids))
