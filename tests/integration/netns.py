"""Hosts on a private network for tests: each host is a network namespace with one address in a /24 of
10.231.0.0/16, all joined by a bridge, so servers and clients talk across real addresses instead of
loopback. The test process itself is on the network too (address .254), so it reaches every host.

    with Network() as net:
        node = net.add_host("node")            # 10.231.N.1
        client = net.add_host("client")        # 10.231.N.2
        server = node.popen(["some-server", "--listen", f"{node.address}:8080"])
        client.run(["curl", f"http://{node.address}:8080/"])
        client.block(node, 8080)               # nothing client sends to node:8080 arrives
        node.cap("400mbit")                    # what node sends leaves at 400 Mbit/s at most
        node.tx_bytes()                        # bytes node has sent on its link so far
        client.set_link(False)                 # its cable pulled (True: plugged in again)

The bridge lives in a namespace of its own, so the host's firewall (which may drop bridged traffic) never
sees these packets. A host's link is shaped on its way out (its eth0's egress, made on first use): an HTB
whose default class passes everything, at 100 Gbit/s until `cap(rate)` lowers that class's rate and ceiling
(so a capped host's uplink is a bottleneck, and `block` still drops through the same qdisc), with a queue of
20 ms of the rate behind it and small packets (ACKs) going round it; `cap(None)` lifts the cap. `tx_bytes()`
and `rx_bytes()` read the link's byte counters inside the namespace (whole frames, headers included). The
/24 is chosen per network (a lock file per /24) so parallel test processes never
share one. Names carry the pid: a later run removes what a killed run left, holding that run's /24 lock
while it does. Everything is removed on close, at interpreter exit, and on SIGTERM. Needs root and iproute2
(`ip`; `tc` with the HTB and bfifo qdiscs and the u32 filter for `block` and `cap`); `require()` skips a
test without root or `ip netns`, or fails it instead when INFERLLAMA_REQUIRE_NETNS=1 (CI, which runs as root, sets it).
"""
from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

PREFIX = "10.231"
RUNNER_HOST = 254
_PASS_CLASS = "1:1"  # HTB classes of a host's link (see Host._shape)
_DROP_CLASS = "1:2"
_SMALL_CLASS = "1:3"  # small packets of a capped host (see Host.cap)
_UNCAPPED = "100gbit"  # the pass class's rate until Host.cap
_PROTOCOLS = {"tcp": 6, "udp": 17}
NAME_PREFIX = "inferllama-"
_STALE = re.compile(rf"^{NAME_PREFIX}(\d+)-(\d+)-(.+)$")  # pid, third byte of the /24, host

_open_networks: list["Network"] = []
_registry_lock = threading.Lock()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


REQUIRE_ENV = "INFERLLAMA_REQUIRE_NETNS"


def _bits_per_second(rate: str) -> int:
    """tc's "400mbit" (bit, kbit, mbit, gbit) in bits per second."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.strip().lower())
    if not match:
        raise ValueError(f"rate {rate!r}: expected a number and bit, kbit, mbit or gbit")
    return int(float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2)])


def require() -> None:
    """Skips the calling test (unittest.SkipTest) unless namespaces can be made here; with
    INFERLLAMA_REQUIRE_NETNS=1 in the environment, fails it (AssertionError) instead."""
    if os.geteuid() != 0:
        _unavailable("network namespaces need root (CI runs the tests as root)")
    if not shutil.which("ip"):
        _unavailable("`ip` (iproute2) is not installed: scripts/install-deps.sh --test installs it")
    probe = f"{NAME_PREFIX}{os.getpid()}-0-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        _unavailable(f"`ip netns add` does not work here: {made.stderr.strip()}")
    _ip("netns", "delete", probe, check=False)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        raise AssertionError(f"{reason} ({REQUIRE_ENV}=1: namespaces are required here)")
    raise unittest.SkipTest(reason)


def remove_stale() -> None:
    """Deletes the namespaces (and this host's end of their network's link) of test processes that died
    without cleaning up: their pid is gone. Only while holding the lock of their /24, and a /24 whose lock
    another process holds is left alone: the link's name is the /24's, not the pid's, so once a live
    network has claimed the /24 again, `ilnetN` is that network's."""
    stale: dict[str, list[tuple[str, str]]] = {}  # third byte of the /24 -> (namespace, host)
    listed = _ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            stale.setdefault(match.group(2), []).append((name, match.group(3)))
    for third, namespaces in stale.items():
        lock = _lock_subnet(third)
        if lock is None:
            continue
        try:
            for name, host in namespaces:
                _kill_namespace_processes(name)
                _ip("netns", "delete", name, check=False)
                if host == "switch":
                    _ip("link", "delete", _runner_interface(third), check=False)
        finally:
            lock.close()


def _lock_subnet(third: int | str):
    """The open lock file of 10.231.`third`.0/24 with its flock held, or None when another network (of
    this process or another) holds it. Closing the file releases the lock."""
    lock = open(os.path.join(tempfile.gettempdir(), f"inferllama-netns-{PREFIX}.{third}.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _kill_namespace_processes(netns: str) -> None:
    """Every process still inside `netns` (all of them started by the test that made it)."""
    pids = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _runner_interface(third: str) -> str:
    """The test process's end of the link to the bridge of 10.231.`third`.0/24: unique while the /24 is held."""
    return f"ilnet{third}"


class Host:
    """One network namespace with one address on the network."""

    def __init__(self, network: "Network", name: str, netns: str, address: str, interface: str):
        self.network = network
        self.name = name
        self.netns = netns
        self.address = address
        self.interface = interface  # its end of the link to the bridge, inside the namespace
        self._processes: list[subprocess.Popen] = []
        self._shaped = False
        self._small_class = False

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run inside this host (the process is exec'd: its pid is the command's own)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Starts `argv` inside this host; it is stopped when the host or the network closes."""
        proc = subprocess.Popen(self.command(argv), **kwargs)
        self._processes.append(proc)
        return proc

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Runs `argv` inside this host to its end (subprocess.run's keywords)."""
        return subprocess.run(self.command(argv), **kwargs)

    def block(self, peer: "Host | str", port: int, protocol: str = "tcp") -> None:
        """From now on, nothing this host sends to `peer`'s `port` (TCP or UDP) arrives. A policy-routing rule
        makes connect() and sendto() fail at once with EACCES; a socket bound to the device (as libtorrent
        binds its own) skips routing rules, so a filter on the link also drops what it sends, as a firewall
        would (its connections time out)."""
        address = peer.address if isinstance(peer, Host) else peer
        _ip("-n", self.netns, "rule", "add", "to", address, "ipproto", protocol, "dport", str(port), "prohibit")
        self._shape()
        self._tc("filter", "add", "dev", self.interface, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", "dst", f"{address}/32", "match", "ip", "protocol", str(_PROTOCOLS[protocol]), "0xff",
                 "match", "ip", "dport", str(port), "0xffff", "flowid", _DROP_CLASS)

    def cap(self, rate: str | None) -> None:
        """What this host sends (its link's egress) leaves at `rate` at most ("400mbit": a number and bit,
        kbit, mbit or gbit); None lifts the cap. Only the class that passes traffic changes, so `block` rules
        keep dropping. The queue behind the cap holds 20 ms of it (a byte FIFO), and packets under 128 bytes
        (TCP's ACKs) go round it, as a fair queue (fq, fq_codel, not in every kernel) would let them
        through: behind the host's own data, or dropped by its full queue, the ACKs of what the host
        downloads would make that download crawl because of what it uploads."""
        self._shape()
        if rate is None:
            self._tc("class", "change", "dev", self.interface, "parent", "1:", "classid", _PASS_CLASS, "htb",
                     "rate", _UNCAPPED, "ceil", _UNCAPPED, "quantum", "65536")
            subprocess.run(["tc", "-n", self.netns, "qdisc", "del", "dev", self.interface, "parent", _PASS_CLASS],
                           capture_output=True)
            return
        self._tc("class", "change", "dev", self.interface, "parent", "1:", "classid", _PASS_CLASS, "htb",
                 "rate", rate, "ceil", rate, "quantum", "65536")
        queue = max(_bits_per_second(rate) // 8 // 50, 128 * 1024)
        self._tc("qdisc", "replace", "dev", self.interface, "parent", _PASS_CLASS, "handle", "10:", "bfifo",
                 "limit", str(queue))
        if not self._small_class:
            # Packets under 128 bytes (TCP's ACKs) go round the cap, after the block filters (prio 1).
            self._tc("class", "add", "dev", self.interface, "parent", "1:", "classid", _SMALL_CLASS, "htb",
                     "rate", _UNCAPPED, "quantum", "65536")
            self._tc("filter", "add", "dev", self.interface, "parent", "1:", "protocol", "ip", "prio", "2", "u32",
                     "match", "u16", "0x0000", "0xff80", "at", "2", "flowid", _SMALL_CLASS)
            self._small_class = True

    def tx_bytes(self) -> int:
        """Bytes this host has sent on its link so far (the interface's counter, read inside the namespace)."""
        return self._counter("tx_bytes")

    def rx_bytes(self) -> int:
        """Bytes this host has received on its link so far."""
        return self._counter("rx_bytes")

    def _counter(self, name: str) -> int:
        result = self.run(["cat", f"/sys/class/net/{self.interface}/statistics/{name}"],
                          capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{name} of {self.name}: {result.stderr.strip()}")
        return int(result.stdout)

    def set_link(self, up: bool) -> None:
        """Takes this host's link down (as a pulled cable: its connections see nothing more) or up again."""
        _ip("-n", self.netns, "link", "set", self.interface, "up" if up else "down")

    def _shape(self) -> None:
        """The link's queueing, made once: an HTB whose default class passes everything and whose other
        class leads to a queue of length 0, which drops."""
        if self._shaped:
            return
        self._tc("qdisc", "add", "dev", self.interface, "root", "handle", "1:", "htb", "default", "1")
        self._tc("class", "add", "dev", self.interface, "parent", "1:", "classid", _PASS_CLASS, "htb",
                 "rate", _UNCAPPED, "quantum", "65536")
        self._tc("class", "add", "dev", self.interface, "parent", "1:", "classid", _DROP_CLASS, "htb",
                 "rate", "8kbit", "quantum", "1514")
        self._tc("qdisc", "add", "dev", self.interface, "parent", _DROP_CLASS, "handle", "2:", "pfifo", "limit", "0")
        self._shaped = True

    def _tc(self, *args: str) -> None:
        result = subprocess.run(["tc", "-n", self.netns, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"tc {' '.join(args)}: {result.stderr.strip()}")

    def stop_processes(self, timeout: float = 10) -> None:
        """SIGTERM to what popen started, SIGKILL after `timeout`; then anything else left inside."""
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._processes.clear()
        _kill_namespace_processes(self.netns)

    def close(self) -> None:
        """Stops its processes and deletes the namespace (and with it its end of the link)."""
        self.stop_processes()
        _ip("netns", "delete", self.netns, check=False)
        self.network._forget(self)

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"


class Network:
    """A /24 of 10.231.0.0/16: hosts .1 to .253 (in the order added) and this process at .254."""

    def __init__(self):
        require()
        remove_stale()
        self._hosts: list[Host] = []
        self._next_host = 1
        self._lock_file, self.subnet = self._claim_subnet()
        self.prefix = self.subnet.rsplit(".", 1)[0]  # "10.231.N"
        third = self.prefix.rsplit(".", 1)[1]
        self._tag = f"{NAME_PREFIX}{os.getpid()}-{third}"
        self.switch = f"{self._tag}-switch"
        self.runner_interface = _runner_interface(third)
        self.runner_address = f"{self.prefix}.{RUNNER_HOST}"
        self._closed = False
        with _registry_lock:
            _open_networks.append(self)
        _stop_on_sigterm()
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            _ip("link", "add", self.runner_interface, "type", "veth", "peer", "name", "runner", "netns", self.switch)
            _ip("-n", self.switch, "link", "set", "runner", "master", "br0", "up")
            _ip("addr", "add", f"{self.runner_address}/24", "dev", self.runner_interface)
            _ip("link", "set", self.runner_interface, "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _claim_subnet():
        """The first free /24, starting from one derived from the pid: free means its lock file is not
        held by another test process and no interface of this host has an address in it."""
        in_use = _ip("-4", "-o", "addr", "show", check=False).stdout
        start = os.getpid() % 250
        for step in range(250):
            third = 1 + (start + step) % 250
            prefix = f"{PREFIX}.{third}."
            if f"inet {prefix}" in in_use:
                continue
            lock = _lock_subnet(third)
            if lock is None:
                continue
            return lock, f"{prefix}0/24"
        raise RuntimeError(f"no free /24 in {PREFIX}.0.0/16")

    def add_host(self, name: str) -> Host:
        """A new namespace linked to the bridge, with the next address and lo up."""
        if name == "switch" or any(host.name == name for host in self._hosts):
            raise ValueError(f"a host named {name!r} exists on this network")
        if self._next_host >= RUNNER_HOST:
            raise RuntimeError("this network is full")
        number = self._next_host
        self._next_host += 1
        netns = f"{self._tag}-{name}"
        address = f"{self.prefix}.{number}"
        _ip("netns", "add", netns)
        host = Host(self, name, netns, address, "eth0")
        self._hosts.append(host)
        try:
            _ip("-n", netns, "link", "set", "lo", "up")
            port = f"h{number}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
        except BaseException:
            host.close()
            raise
        return host

    def _forget(self, host: Host) -> None:
        if host in self._hosts:
            self._hosts.remove(host)

    def close(self) -> None:
        """Stops every host's processes and deletes every namespace and link; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for host in list(self._hosts):
            host.close()
        _ip("netns", "delete", self.switch, check=False)
        # The namespace's veth pair goes with it, but only once the kernel has torn it down: the next
        # network may want this interface name at once.
        _ip("link", "delete", self.runner_interface, check=False)
        self._lock_file.close()
        with _registry_lock:
            if self in _open_networks:
                _open_networks.remove(self)

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    with _registry_lock:
        networks = list(_open_networks)
    for network in networks:
        network.close()


def _stop_on_sigterm() -> None:
    """A SIGTERM (a test runner's timeout) unwinds like Ctrl-C, so context managers and atexit remove the
    namespaces; only installed where nobody else handles the signal."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
