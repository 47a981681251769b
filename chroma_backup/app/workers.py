"""Worker threads for the operations that spread collections over several threads (backup and
health rounds, a whole-server restore): started together, waited for in a way Ctrl-C can
interrupt, stopped at their next batch when it does."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_workers(worker: Callable[[], None], count: int, stop: threading.Event, name: str) -> None:
    """``worker`` in ``count`` threads, until all return.  A KeyboardInterrupt in the waiting
    thread sets ``stop`` (every worker ends at its next batch), waits for them and is raised."""
    threads = [threading.Thread(target=worker, name=f"{name}-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
        raise
