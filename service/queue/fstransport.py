"""kombu's filesystem transport without its lost-message race (the embedded broker).

kombu's ``filesystem`` transport writes a message by opening ``<name>.msg`` in the queue
folder, then locking it, then writing; a consumer lists the folder, moves the file away
and reads it without taking the lock. A consumer that moves a file between the producer's
open and write reads an empty payload, fails with JSONDecodeError, and the message (a
queued run) is lost for good. Moving the file to the system's temporary folder also turns
the move into copy-and-delete when that is another filesystem, so two consumers could both
copy one message.

This transport reads the same folders and files (a producer may still be plain kombu,
such as the API's queue client):

* ``_get`` renames a message into the processed folder (one rename on one filesystem:
  exactly one consumer wins), then reads it under a shared lock, so it waits for a
  producer that still holds its exclusive lock, and retries while the file is empty
  (a producer between its open and its lock);
* ``_put`` writes under a name consumers ignore and renames it into place, so a complete
  message appears at once;
* an exchange's table (``<exchange>.exchange`` in the control folder, which each consumer
  adds its queue to when it starts) is created without truncation and read and written only
  under its lock, an empty file being an empty table: kombu creates it with a truncating
  open before it locks it, so a second worker starting at the same moment read it empty and
  died with JSONDecodeError ("Unrecoverable error") before it was ready;
* a consumer waiting out its polling interval wakes as soon as one of its messages is
  acknowledged or rejected: with a prefetch of one, that is when it may take the next
  message, and sleeping the interval out would leave the worker idle for half of it on
  average.

Both sides use it (``service.queue.celery_config``) when the broker is the filesystem.
"""

import logging
import os
import socket
import threading
import time
import uuid
from queue import Empty

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

# How long a consumer waits for the producer of a message it found empty.
EMPTY_MESSAGE_WAIT = 5.0


class Channel(filesystem.Channel):
    """Filesystem channel with atomic puts and race-free gets."""

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        # A name with no "<stamp>.<queue>.msg" form: consumers skip it until the rename.
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4().hex}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.rename(partial, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add message {name!r} to the queue") from exc

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        path = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "rb+", buffering=0) as f:
                filesystem.lock(f, filesystem.LOCK_EX)
                try:
                    data = f.read()
                    table = [filesystem.exchange_queue_t(*row)
                             for row in (loads(bytes_to_str(data)) if data else [])]
                    if entry not in table:
                        table.insert(0, entry)
                        f.seek(0)
                        f.truncate()
                        f.write(str_to_bytes(dumps(table)))
                finally:
                    filesystem.unlock(f)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot open {path}") from exc

    def get_table(self, exchange):
        path = self._exchange_file(exchange)
        try:
            with open(path, "rb") as f:
                filesystem.lock(f, filesystem.LOCK_SH)
                try:
                    data = f.read()
                finally:
                    filesystem.unlock(f)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot open {path}") from exc
        rows = loads(bytes_to_str(data)) if data else []  # empty: a creator yet to write
        return [filesystem.exchange_queue_t(*row) for row in rows]

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple)
        self.connection.settled.set()  # from the pool's result thread: wake the consumer

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue)
        self.connection.settled.set()

    def _claim_folder(self) -> str:
        folder = self.processed_folder
        os.makedirs(folder, exist_ok=True)
        return folder

    def _get(self, queue):
        wanted = f"{queue}.msg"
        claim_folder = self._claim_folder()
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(claim_folder, filename)
            try:
                os.rename(os.path.join(self.data_folder_in, filename), claimed)
            except OSError:  # another consumer took it first
                continue
            payload = self._read_whole(claimed)
            if payload is None:
                log.error("message %s stayed empty for %.0f s; left in %s", filename,
                          EMPTY_MESSAGE_WAIT, claim_folder)
                continue
            if not self.store_processed:
                try:
                    os.remove(claimed)
                except OSError:
                    pass
            return payload
        raise Empty()

    @staticmethod
    def _read_whole(path):
        """The decoded message at ``path``, once its producer has written it."""
        deadline = time.monotonic() + EMPTY_MESSAGE_WAIT
        delay = 0.0005
        with open(path, "rb") as f:
            while True:
                filesystem.lock(f, filesystem.LOCK_SH)
                try:
                    f.seek(0)
                    data = f.read()
                finally:
                    filesystem.unlock(f)
                if data:
                    try:
                        return loads(bytes_to_str(data))
                    except ValueError:
                        pass  # not written yet in full: a producer without a lock
                if time.monotonic() > deadline:
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)


class Transport(filesystem.Transport):
    """kombu's filesystem transport with ``Channel`` above, whose polling wait ends early
    when a message is settled."""

    Channel = Channel

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.settled = threading.Event()

    def drain_events(self, connection, timeout=None):
        """kombu's loop, waiting on ``settled`` instead of sleeping between polls."""
        time_start = time.monotonic()
        polling_interval = self.polling_interval
        if timeout and polling_interval and polling_interval > timeout:
            polling_interval = timeout
        while True:
            self.settled.clear()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if timeout is not None and time.monotonic() - time_start >= timeout:
                    raise socket.timeout()
                if polling_interval is not None:
                    self.settled.wait(polling_interval)
            else:
                return
