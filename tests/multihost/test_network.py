"""The test hosts themselves: a host reaches PostgreSQL and Redis only over its link (its
loopback has neither), a cut link or a blocked service loses packets without refusing
them, and nothing of a network outlives it."""

import subprocess
import sys

from .netns import Network

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print("open")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(type(exc).__name__)
"""


def connect(host, address, port, timeout=1.0) -> str:
    """What a TCP connect from ``host`` to address:port does: open, timeout or an error."""
    return host.run([sys.executable, "-c", PROBE, address, str(port), str(timeout)],
                    check=True).stdout.strip()


def test_hosts_reach_services_over_their_link_only(network):
    w1, w2 = network.add_host("w1"), network.add_host("w2")
    assert w1.run(["hostname"]).stdout.strip() == "w1"
    postgres, redis = w1.services["postgres"], w1.services["redis"]
    assert connect(w1, *postgres) == "open" and connect(w1, *redis) == "open"
    assert connect(w1, "127.0.0.1", postgres[1]) == "ConnectionRefusedError"
    assert w1.url("redis://127.0.0.1:6379/3") == f"redis://{redis[0]}:6379/3"

    w1.block("postgres")
    assert connect(w1, *postgres) == "timeout"  # lost, not refused
    assert connect(w1, *redis) == "open"
    assert connect(w2, *w2.services["postgres"]) == "open"  # another host is unaffected
    w1.unblock("postgres")
    assert connect(w1, *postgres) == "open"

    w1.cut()
    assert connect(w1, *redis) == "timeout"
    assert connect(w2, *w2.services["redis"]) == "open"
    w1.restore()
    assert connect(w1, *redis) == "open"
    w1.cut(one_way=True)  # what w1 sends arrives, the answers are lost
    assert connect(w1, *redis) == "timeout"
    w1.restore()
    assert connect(w1, *redis) == "open"


def test_nothing_outlives_a_network(netns_available):
    network = Network({"redis": ("127.0.0.1", 6379)})
    host = network.add_host("h")
    process = host.start(["sleep", "600"])
    network.close()
    assert process.popen.poll() is not None
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    assert host.netns not in names and host.root_dev not in links
    assert f"{host.services['redis'][0]}:6379" not in listening  # the forwarder stopped
