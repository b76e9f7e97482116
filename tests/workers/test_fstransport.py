"""service.queue.fstransport: the embedded broker loses no message and delivers each once."""

import json
import os
import subprocess
import sys
import threading
import time
from queue import Empty

import pytest
from kombu import Connection, Exchange, Queue

from service.queue import celery_config
from tests.eventually import eventually


def connection(folder, transport="service.queue.fstransport:Transport"):
    options = celery_config(f"filesystem://{folder}")["broker_transport_options"]
    return Connection("filesystem://", transport=transport, transport_options=options)


def test_a_message_still_being_written_is_read_once_complete(tmp_path):
    """The producer has created the file but not written it (kombu's producer opens, then
    locks, then writes): the consumer waits for the content instead of losing it."""
    with connection(tmp_path / "q") as conn:
        channel = conn.default_channel
        path = os.path.join(channel.data_folder_in, "1_abc.celery.msg")
        producer = open(path, "wb", buffering=0)  # opened, nothing written yet
        got = {}
        reader = threading.Thread(target=lambda: got.update(msg=channel._get("celery")))
        reader.start()
        eventually(lambda: not os.path.exists(path), timeout=4,
                   message="the consumer never took the file")
        assert reader.is_alive()  # waiting for the content, not failed
        producer.write(json.dumps({"body": "x"}).encode())
        producer.close()
        reader.join(5)
        assert got == {"msg": {"body": "x"}}
        with pytest.raises(Empty):
            channel._get("celery")


def test_put_is_atomic_and_get_skips_partial_files(tmp_path):
    with connection(tmp_path / "q") as conn:
        channel = conn.default_channel
        # a put in progress, under its temporary name
        open(os.path.join(channel.data_folder_out, ".partial-123"), "wb").close()
        with pytest.raises(Empty):
            channel._get("celery")
        channel._put("celery", {"body": "y"})
        assert channel._get("celery") == {"body": "y"}
        assert os.listdir(channel.data_folder_in) == [".partial-123"]


def test_each_message_is_delivered_exactly_once(tmp_path):
    """Plain kombu producers (as the API's queue client is) and two consumers of this
    transport, all at once."""
    n_producers, per_producer = 3, 200
    received, errors = [], []
    done = threading.Event()

    def produce(k):
        with connection(tmp_path / "q", transport="filesystem") as conn:
            channel = conn.default_channel
            for i in range(per_producer):
                channel._put("celery", {"n": k * per_producer + i})

    def consume():
        try:
            with connection(tmp_path / "q") as conn:
                channel = conn.default_channel
                while True:
                    finished = done.is_set()
                    try:
                        received.append(channel._get("celery")["n"])
                    except Empty:
                        if finished:  # nothing left after the last put
                            return
        except Exception as exc:
            errors.append(exc)

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    producers = [threading.Thread(target=produce, args=(k,)) for k in range(n_producers)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(60)
    done.set()
    for t in consumers:
        t.join(60)
    assert errors == []
    assert sorted(received) == list(range(n_producers * per_producer))


def test_workers_use_it_on_the_filesystem_broker(tmp_path):
    code = ("from workers.celery_app import app\n"
            "with app.connection_for_read() as c:\n"
            "    print(type(c.transport).__module__, type(c.transport).__name__)\n")
    env = {**os.environ, "DESCENT_BROKER_URL": f"filesystem://{tmp_path / 'q'}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, text=True,
                         capture_output=True, check=True).stdout
    assert out.split() == ["service.queue.fstransport", "Transport"]


def test_the_api_queue_client_uses_it_too(tmp_path):
    from service.queue import QueueClient

    client = QueueClient(f"filesystem://{tmp_path / 'q'}")
    with client.celery.connection_for_write() as connection:
        assert type(connection.transport).__module__ == "service.queue.fstransport"


def test_a_consumer_takes_its_next_message_when_the_last_is_acked(tmp_path):
    """With a prefetch of one, the consumer waiting out its polling interval wakes at the
    ack (the worker's pool acks from another thread) instead of sleeping it out."""
    options = {**celery_config(f"filesystem://{tmp_path / 'q'}")["broker_transport_options"],
               "polling_interval": 30.0}
    with Connection("filesystem://", transport="service.queue.fstransport:Transport",
                    transport_options=options) as conn:
        # Names of its own: kombu keeps exchanges and bindings per transport class.
        queue = Queue("wake-test", exchange=Exchange("wake-test"), routing_key="wake-test")
        producer = conn.Producer()
        for n in (1, 2):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="wake-test",
                             declare=[queue])
        received = []
        with conn.Consumer(queue, callbacks=[lambda body, message: received.append(message)],
                           prefetch_count=1):
            conn.drain_events(timeout=5)
            assert len(received) == 1
            threading.Timer(0.2, received[0].ack).start()
            started = time.monotonic()
            conn.drain_events(timeout=10)  # kombu's own transport sleeps until the timeout
            assert time.monotonic() - started < 10
            assert sorted(m.payload["n"] for m in received) == [1, 2]
            received[1].ack()


def test_an_exchange_table_not_written_yet_reads_empty_and_takes_a_queue(tmp_path):
    """A worker that created the exchange's table file but has not written it yet (kombu
    opens, then locks, then writes): a second one starting meanwhile adds its queue to an
    empty table instead of dying with JSONDecodeError before it is ready."""
    with connection(tmp_path / "q") as conn:
        channel = conn.default_channel
        channel.control_folder.mkdir(exist_ok=True)
        (channel.control_folder / "celery.exchange").write_bytes(b"")
        assert channel.get_table("celery") == []
        channel._queue_bind("celery", "celery", None, "celery")
        assert [row.queue for row in channel.get_table("celery")] == ["celery"]


def test_consumers_starting_at_once_all_get_their_queue_bound(tmp_path):
    queues, errors = [f"q{k}" for k in range(8)], []
    start = threading.Barrier(len(queues))

    def bind(queue):
        try:
            with connection(tmp_path / "q") as conn:
                start.wait()
                conn.default_channel._queue_bind("shared", queue, None, queue)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bind, args=(queue,)) for queue in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    with connection(tmp_path / "q") as conn:
        bound = sorted(row.queue for row in conn.default_channel.get_table("shared"))
    assert bound == queues
