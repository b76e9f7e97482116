"""A delaying, connection-resetting TCP proxy, for a slow and flaky link (fault 4): this
kernel has no ``netem``, so the latency and the drops are made here, in user space.

``LossyProxy(listen, target, delay=0.05, reset_every=3.0, seed=1)`` listens on ``listen``
(address, port; port 0 picks one, see ``.address``) in the process that starts it (on the
main host: listen on a test host's ``gateway``, which the host reaches over its link) and
relays each accepted connection to ``target``. Every chunk of bytes, either way, is
delivered ``delay`` seconds after it arrived, in order (so a round trip costs twice that,
whatever the bandwidth). Every ``reset_every`` seconds on average (exponential waits drawn
from ``random.Random(seed)``), one open connection, drawn from the same generator, is
reset: both of its ends get a TCP RST (SO_LINGER 0), bytes in flight inside the proxy are
lost, as when a NAT or a load balancer drops a connection. ``reset_every=None``: never.
``drop_reply(data) -> bool``, if given, sees each chunk on its way back from ``target``:
when it says True, that chunk is never delivered and the connection is reset (a reply
lost in flight, on cue).

It runs an asyncio loop in a daemon thread of its own; ``close()`` stops it and aborts
every connection. ``.accepted`` and ``.resets`` count what it did.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading

CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the writer's socket with an RST (linger on, zero seconds)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class LossyProxy:
    """See the module docstring."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int],
                 delay: float = 0.05, reset_every: float | None = 3.0, seed: int = 1,
                 drop_reply=None):
        self.target, self.delay, self.reset_every = target, delay, reset_every
        self.drop_reply = drop_reply
        self.dropped = 0
        self.random = random.Random(seed)
        self.accepted = self.resets = 0
        self._next_id = 0
        self._live: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name=f"lossy-proxy-{target[1]}")
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._relay, *listen,
                                                      reuse_address=True))
        self.address: tuple[str, int] = self.server.sockets[0].getsockname()[:2]
        self._resetter = (self._call(self._spawn(self._reset_now_and_then()))
                          if reset_every else None)

    def _call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @staticmethod
    async def _spawn(coroutine):
        return asyncio.get_running_loop().create_task(coroutine)

    # ------------------------------------------------------------------------ relaying

    async def _relay(self, reader, writer) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self.accepted += 1
        key, self._next_id = self._next_id, self._next_id + 1
        self._live[key] = pair = (writer, target_writer)

        def drop(data: bytes) -> bool:
            if self.drop_reply is None or not self.drop_reply(data):
                return False
            self.dropped += 1
            self._live.pop(key, None)
            for end in pair:
                _reset(end)
            return True

        try:
            await asyncio.gather(self._pipe(reader, target_writer),
                                 self._pipe(target_reader, writer, drop))
        finally:
            self._live.pop(key, None)
            for end in (writer, target_writer):
                end.transport.abort()

    async def _pipe(self, reader, writer, drop=None) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read
        (unless ``drop(chunk)`` says to reset the connection instead)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def read():
            try:
                while data := await reader.read(CHUNK):
                    queue.put_nowait((loop.time() + self.delay, data))
            except (ConnectionError, OSError):
                pass
            queue.put_nowait((loop.time() + self.delay, b""))

        reading = loop.create_task(read())
        try:
            while True:
                due, data = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:  # the other side closed: half-close this one
                    if not writer.transport.is_closing() and writer.can_write_eof():
                        writer.write_eof()
                    return
                if writer.transport.is_closing() or (drop is not None and drop(data)):
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, RuntimeError):
            pass
        finally:
            reading.cancel()

    # ------------------------------------------------------------------------ resetting

    async def _reset_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self.random.expovariate(1.0 / self.reset_every))
            if self._live:
                keys = sorted(self._live)
                pair = self._live.pop(keys[self.random.randrange(len(keys))])
                self.resets += 1
                for end in pair:
                    _reset(end)

    def reset_all(self) -> int:
        """Reset every open connection now; returns how many there were."""
        async def reset():
            pairs = list(self._live.values())
            self._live.clear()
            for pair in pairs:
                for end in pair:
                    _reset(end)
            self.resets += len(pairs)
            return len(pairs)
        return self._call(reset())

    def close(self) -> None:
        """Stop listening, reset every connection and stop the loop."""
        async def stop():
            self.server.close()
            for pair in list(self._live.values()):
                for end in pair:
                    end.transport.abort()
            self._live.clear()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self._call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def proxied_url(url: str, proxy: LossyProxy) -> str:
    """``url`` (scheme://[user@]host:port/...) pointed at ``proxy`` instead."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + "%s:%d" % proxy.address
    return urlunsplit(parts._replace(netloc=netloc))
