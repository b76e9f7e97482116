"""``serving``: the one way tests run the app on waitress in a thread of their own."""

import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def serving(app, **options) -> Iterator:
    """Serve ``app`` on waitress (``create_server(app, **options)``) in a thread until the
    block ends; yields the server (``server.effective_port``). Every socket, clients'
    kept-alive connections too, is closed in the server's own thread: closing them from
    here races its select() ("Bad file descriptor" in that thread)."""
    from waitress import create_server, wasyncore

    server = create_server(app, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        trigger = server.trigger
        # trigger.pull_trigger(thunk) appends, then writes to the trigger's pipe; a loop
        # awake already can run the thunk, which closes that pipe, in between. The loop runs
        # thunks holding this lock: with it held, the write comes first.
        with trigger.lock:
            trigger.thunks.append(lambda: wasyncore.close_all(server._map))
            trigger.pull_trigger()
        thread.join(10)
        server.task_dispatcher.shutdown()
