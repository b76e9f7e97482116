"""``eventually``: the one way tests wait for something another process or thread does."""

import time


def eventually(condition, timeout: float = 30.0, interval: float = 0.02, message=None):
    """Call ``condition()`` until it returns something truthy and return that; fail the test
    (AssertionError) after ``timeout`` seconds. ``message`` (a string, or a function called
    at the time of failure, such as one returning worker logs) explains the failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not within {timeout} s: {text or condition}")
        time.sleep(interval)
