"""A small thread-safe least-recently-used cache, for results that are costly to make and
never change once made (drawings, verdicts of finished runs)."""

import threading
from collections import OrderedDict


class Recent:
    """The last ``size`` values put, by key, shared by the server's threads."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        """The value put under ``key``, or None; marks it as the most recently used."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
            return self.items.get(key)

    def put(self, key, value) -> None:
        """Keep ``value`` under ``key``, dropping the least recently used past ``size``."""
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
