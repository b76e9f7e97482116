"""Test hosts in Linux network namespaces: worker (or API) hosts that reach PostgreSQL,
Redis and anything else of the main host over a network link the test can cut.

API (see tests/multihost/conftest.py for the pytest fixtures built on it)::

    reason = unavailable()          # None, or why namespaces cannot be made here
    network = Network({"postgres": ("127.0.0.1", 5432), "redis": ("127.0.0.1", 6379)})
    host = network.add_host("w1")   # a namespace, a veth pair, its own hostname "w1"
    host.address                    # the host's address (inside its namespace)
    host.gateway                    # the main host's address on this host's link
    host.url(url)                   # url with a service's 127.0.0.1:port replaced by the
                                    # main-host address this host reaches that service at
    proc = host.start(argv, env=..., cwd=...)  # a Process: .lines, .wait_for(text), .stop()
    host.run(argv)                  # subprocess.run inside the namespace
    host.cut() / host.restore()     # the host's link down / up (every packet lost);
                                    # cut(one_way=True): only packets to the host lost
    host.block("postgres") / host.unblock("postgres")  # one service's packets lost (this
                                    # host only: a black hole, no reset, no refusal)
    host.reset("redis")             # close this host's open connections to a service
    host.tcp_states("redis")        # e.g. ["ESTAB", "SYN-SENT"]: the host's connections
    network.close()                 # processes, namespaces, links, forwarders: all gone

Each session holds one of 64 slots (an flock on /run/descent-test-netns/slot-N.lock,
released by the kernel when the process dies); slot N owns the subnet 10.231.N.0/24 and the
names dt<N>-* (namespaces) and dt<N>h*r (root-side veths). Taking a slot first removes what a
dead session that held it left behind. Host i gets 10.231.N.(16i)/28: .16i+1 is the main
host's end (the gateway), .16i+2... one address per service, .16i+14 the host's end.

PostgreSQL and Redis listen on loopback only: a forwarder thread in this process listens on
each host's service address and relays to the service (so their configuration is not
touched). Blocking one service points that address, inside the host, at a MAC address
nobody has: its packets vanish as on a broken network, without iptables or nft.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

STATE = Path("/run/descent-test-netns")
SLOTS = 64
PREFIX = "dt"
NOWHERE_MAC = "02:00:00:00:00:01"  # a locally administered address on no interface
MAX_HOSTS = 15


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why test hosts cannot be made here (not root, no iproute2, no namespaces), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if shutil.which("unshare") is None:
        return "util-linux's `unshare` is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


# ------------------------------------------------------------------------- forwarders


class Forwarders:
    """TCP relays (asyncio, one daemon thread for all): listen on an address, connect each
    accepted connection to a target and copy bytes both ways."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="netns-forwarders")
        self.thread.start()
        self.servers: dict[tuple, asyncio.AbstractServer] = {}
        self.connections: dict[tuple, set] = {}
        self.tasks: set = set()  # the relays running

    def call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def add(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        """Relay connections to ``listen`` (address, port) to ``target``."""
        self.connections[listen] = set()
        self.servers[listen] = self.call(self._serve(listen, target))

    async def _serve(self, listen, target):
        live = self.connections[listen]

        async def relay(reader, writer):
            task = asyncio.current_task()
            self.tasks.add(task)
            try:
                target_reader, target_writer = await asyncio.open_connection(*target)
            except OSError:
                writer.transport.abort()
                self.tasks.discard(task)
                return
            pair = (writer, target_writer)
            live.add(pair)
            try:
                await asyncio.gather(self._copy(reader, target_writer),
                                     self._copy(target_reader, writer))
            except asyncio.CancelledError:
                pass  # close(): end as a finished relay (asyncio logs cancelled ones)
            finally:
                live.discard(pair)
                self.tasks.discard(task)
                for w in pair:
                    w.transport.abort()

        return await asyncio.start_server(relay, *listen, reuse_address=True)

    @staticmethod
    async def _copy(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.transport.is_closing():
                try:
                    writer.write_eof()  # half-close, as the other side did
                except (OSError, RuntimeError):
                    writer.transport.abort()

    def reset(self, listen: tuple[str, int]) -> int:
        """Abort (RST) every open connection through ``listen``; returns how many."""
        async def abort():
            pairs = list(self.connections.get(listen, ()))
            for pair in pairs:
                for w in pair:
                    w.transport.abort()
            return len(pairs)
        return self.call(abort())

    def close(self) -> None:
        async def stop():
            for server in self.servers.values():
                server.close()
            for listen in self.connections:
                for pair in list(self.connections[listen]):
                    for w in pair:
                        w.transport.abort()
            relays = list(self.tasks)
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


# -------------------------------------------------------------------------- processes


class Process:
    """A process started on a host: its output lines (stdout and stderr) collected."""

    def __init__(self, host: "Host", name: str, popen: subprocess.Popen):
        self.host, self.name, self.popen = host, name, popen
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self, last: int = 200) -> str:
        return "\n".join(self.lines[-last:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for(self, text: str, timeout: float = 90.0, since: int = 0) -> int:
        """The index of the first output line from ``since`` on containing ``text``; fails
        (AssertionError) after ``timeout`` s or if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            for k in range(since, len(self.lines)):
                if text in self.lines[k]:
                    return k
            if not self.alive() or time.monotonic() > deadline:
                state = "exited %s" % self.popen.returncode if not self.alive() else "running"
                raise AssertionError(f"{self.name} on {self.host.name} ({state}) never "
                                     f"printed {text!r}:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process's group (it leads a session of its own)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM to its group, SIGKILL after ``grace`` seconds; its exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.signal(signal.SIGKILL)  # whatever is left of the group (pool children)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return self.popen.returncode


# ------------------------------------------------------------------------------ hosts


class Host:
    """One test host: a network namespace with a hostname of its own, linked to the main
    host (the root namespace) by a veth pair."""

    def __init__(self, network: "Network", index: int, name: str):
        self.network, self.index, self.name = network, index, name
        base = f"10.231.{network.slot}.{16 * index}"
        self.netns = f"{network.prefix}-{name}"
        self.root_dev = f"{network.prefix}h{index}r"  # <= 15 characters
        self.dev = "eth0"
        first = 16 * index
        self.gateway = f"10.231.{network.slot}.{first + 1}"
        self.address = f"10.231.{network.slot}.{first + 14}"
        self.subnet = f"{base}/28"
        # service name -> (address on the main host's end, port)
        self.services: dict[str, tuple[str, int]] = {}
        self.processes: list[Process] = []
        self._root_mac = self._mac = ""  # the link's ends: main host's, this host's

    def _create(self) -> None:
        ns, root, peer = self.netns, self.root_dev, f"{self.root_dev[:-1]}p"
        _ip("netns", "add", ns)
        _ip("link", "add", root, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("-n", ns, "link", "set", peer, "name", self.dev)
        _ip("addr", "add", f"{self.gateway}/28", "dev", root)
        for k, (service, target) in enumerate(self.network.services.items()):
            address = f"10.231.{self.network.slot}.{16 * self.index + 2 + k}"
            _ip("addr", "add", f"{address}/32", "dev", root)
            self.services[service] = (address, target[1])
        _ip("link", "set", root, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{self.address}/28", "dev", self.dev)
        _ip("-n", ns, "link", "set", self.dev, "up")
        _ip("-n", ns, "route", "add", "default", "via", self.gateway)
        self._root_mac = Path(f"/sys/class/net/{root}/address").read_text().strip()
        self._mac = self.run(["cat", f"/sys/class/net/{self.dev}/address"],
                             check=True).stdout.strip()
        # Fixed neighbours on both ends: no ARP, and block() and cut(one_way=True) can
        # point one of them elsewhere.
        for address in [self.gateway] + [a for a, _ in self.services.values()]:
            self._neighbour(address, self._root_mac)
        _ip("neigh", "replace", self.address, "lladdr", self._mac, "dev", root,
            "nud", "permanent")
        for service, target in self.network.services.items():
            self.network.forwarders.add(self.services[service], target)

    def _neighbour(self, address: str, mac: str) -> None:
        _ip("-n", self.netns, "neigh", "replace", address, "lladdr", mac, "dev", self.dev,
            "nud", "permanent")

    # --------------------------------------------------------------- what runs on it

    def command(self, argv) -> list[str]:
        """``argv`` as run on this host: in its namespace, under its own hostname."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *map(str, argv)]

    def run(self, argv, **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run of ``argv`` on this host (text output captured by default)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv), **kwargs)

    def start(self, argv, name: str | None = None, env: dict | None = None,
              cwd=None) -> Process:
        """Start ``argv`` on this host in a session of its own, its output collected;
        stopped when the network closes."""
        popen = subprocess.Popen(self.command(argv), env=env, cwd=cwd, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        process = Process(self, name or str(argv[0]), popen)
        self.processes.append(process)
        return process

    def url(self, url: str) -> str:
        """``url`` with the host:port of a forwarded service replaced by the address this
        host reaches it at (e.g. postgresql://u@127.0.0.1:5432/db -> ...@10.231.N.M:5432/db)."""
        parts = urlsplit(url)
        for service, (host, port) in self.network.services.items():
            if parts.hostname == host and (parts.port or port) == port:
                address, _ = self.services[service]
                userinfo = parts.netloc.rpartition("@")[0]
                netloc = f"{userinfo}@" if userinfo else ""
                return urlunsplit(parts._replace(netloc=f"{netloc}{address}:{port}"))
        raise ValueError(f"no forwarded service at {parts.hostname}:{parts.port}")

    # ----------------------------------------------------------------------- faults

    def cut(self, one_way: bool = False) -> None:
        """Take the host's link down: every packet to or from it is lost (connections
        stay open on both ends, as when a cable is pulled). ``one_way``: only the main
        host's packets to it are lost; what the host sends still arrives (its statements
        run, their answers never come back)."""
        if one_way:
            _ip("neigh", "replace", self.address, "lladdr", NOWHERE_MAC, "dev",
                self.root_dev, "nud", "permanent")
        else:
            _ip("link", "set", self.root_dev, "down")

    def restore(self) -> None:
        """Undo ``cut``: the link up, the main host's packets to it delivered again."""
        _ip("link", "set", self.root_dev, "up")
        _ip("neigh", "replace", self.address, "lladdr", self._mac, "dev", self.root_dev,
            "nud", "permanent")

    def block(self, service: str) -> None:
        """Lose every packet this host sends to ``service`` (a black hole: its connections
        hang, new ones time out), other services unaffected."""
        self._neighbour(self.services[service][0], NOWHERE_MAC)

    def unblock(self, service: str) -> None:
        """Undo ``block(service)``: held connections carry on (TCP retransmits)."""
        self._neighbour(self.services[service][0], self._root_mac)

    def reset(self, service: str) -> int:
        """Abort this host's open connections to ``service`` at the main host's end (the
        host sees a reset); returns how many were open."""
        return self.network.forwarders.reset(self.services[service])

    def tcp_states(self, service: str) -> list[str]:
        """The states (ESTAB, SYN-SENT, CLOSE-WAIT...) of this host's TCP connections to
        ``service``, as ``ss`` shows them inside the host."""
        address, port = self.services[service]
        out = self.run(["ss", "-Htn", "state", "all", "dst", f"{address}:{port}"],
                       check=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def stop_processes(self) -> None:
        for process in self.processes:
            process.stop(grace=1.0)
        self.processes.clear()


# ---------------------------------------------------------------------------- network


def _kill_namespace(netns: str) -> None:
    pids = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", netns, check=False)


def _remove_slot_leftovers(prefix: str) -> None:
    """Delete the namespaces and root-side links named for ``prefix`` (a dead session's)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix + "-"):
            _kill_namespace(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        dev = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if dev.startswith(prefix + "h"):
            _ip("link", "del", dev, check=False)


class Network:
    """The test hosts of one test session and the main host's forwarders to ``services``
    ({name: (address, port)} reachable from the root namespace)."""

    def __init__(self, services: dict[str, tuple[str, int]]):
        self.services = dict(services)
        self.hosts: dict[str, Host] = {}
        self._lock_file = None
        self.slot = self._take_slot()
        self.prefix = f"{PREFIX}{self.slot}"
        _remove_slot_leftovers(self.prefix)
        self.forwarders = Forwarders()

    def _take_slot(self) -> int:
        STATE.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            f = open(STATE / f"slot-{slot}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            self._lock_file = f
            return slot
        raise RuntimeError(f"all {SLOTS} test network slots are taken")

    def add_host(self, name: str) -> Host:
        """A new host called ``name`` (its namespace, link, addresses and forwarders)."""
        if name in self.hosts:
            raise ValueError(f"host {name} exists")
        if len(self.hosts) >= MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} hosts")
        host = Host(self, len(self.hosts) + 1, name)
        self.hosts[name] = host
        host._create()
        return host

    def close(self) -> None:
        """Stop every process, delete every namespace and link, stop the forwarders and
        give the slot back. Safe to call twice."""
        for host in self.hosts.values():
            host.stop_processes()
        for host in self.hosts.values():
            _kill_namespace(host.netns)
            _ip("link", "del", host.root_dev, check=False)
        self.hosts.clear()
        _remove_slot_leftovers(self.prefix)
        if self.forwarders is not None:
            self.forwarders.close()
            self.forwarders = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
