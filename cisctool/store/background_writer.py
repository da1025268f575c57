"""A bounded queue consumed on one thread: the computing loop hands over results and goes on.

Rectify computes a batch on the model's device while the previous one is cropped, compressed
and written; the queue keeps the host memory that waits for the writer within a bound.
"""

import collections
import threading
from collections.abc import Callable
from typing import Any


class BackgroundWriter:
    """Runs `consume(item)` on a thread; re-raises its failure.

    Waiting items are bounded in bytes, not in count (the item being consumed
    counts until it is done), so the memory held does not grow with the image
    size; one item is always admitted, however large.
    """

    def __init__(self, consume: Callable[[Any], None], max_bytes: int, name: str = "background-writer") -> None:
        self.consume = consume
        self.max_bytes = max_bytes
        self.items: collections.deque[tuple[Any, int]] = collections.deque()
        self.queued_bytes = 0
        self.changed = threading.Condition()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.items)
                item, size = self.items.popleft()
            if item is None:
                return
            if self.error is None:
                try:
                    self.consume(item)
                except BaseException as error:  # handed to the main thread at the next put/close
                    self.error = error
            with self.changed:
                self.queued_bytes -= size
                self.changed.notify_all()

    def put(self, item: Any, size: int) -> None:
        """Queue `item` of `size` bytes once the queue has room for it."""
        self._raise()
        with self.changed:
            self.changed.wait_for(lambda: not self.queued_bytes or self.queued_bytes + size <= self.max_bytes)
            self.items.append((item, size))
            self.queued_bytes += size
            self.changed.notify_all()

    def close(self) -> None:
        """Wait until every item is consumed; raise what the thread raised."""
        with self.changed:
            self.items.append((None, 0))
            self.changed.notify_all()
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
