"""A shaped network link in user space: real TCP through a namespace and a TUN pair.

This kernel has no `netem` qdisc, so faults are made by a forwarder that owns the only
route between a network namespace and the namespace of the caller:

```
  namespace <name>                                  caller's namespace
  gateway, edge broker -> tun fli… =fd=> forwarder =fd=> tun flo… -> uplink broker, cloud
  10.213.a.b+2 (inside) <-          <=  delay, jitter, <=         <- 10.213.a.b+1 (outside)
                                        loss, reorder,
                                        rate + queue, cut
```

Every IP packet the inside sends to `outside_ip` leaves its TUN, is read by the forwarder
thread, shaped, and written into the other TUN, where the kernel receives it as if it came
off a wire; replies travel back the same way. Shaping is per direction (`up`: from the
inside, `down`: towards it) and can change while traffic flows:

    with Link.create() as link:
        link.set(latency=0.3, jitter=0.05, loss=0.02)
        link.partition()            # silent: everything dropped, no RST, no ICMP
        link.heal()
        link.flap(down=5, up=5)

The model follows netem where it can: loss is decided on arrival; a rate limit is a
serializing bottleneck with a bounded byte queue that tail-drops; latency (with jitter)
is added after the bottleneck and keeps packets in order, except those picked by
`reorder`, which are held back `reorder_delay` longer so that later ones overtake them
(netem instead sends them early, which does nothing without latency). A cut also drops
what is already in flight. Counters (`stats()`) include TCP payload bytes and first-sent
TCP bytes per direction, so a test can tell TCP retransmissions from application resends.

Needs root (namespaces, TUN). Namespaces are named `fogline-<pid>-<hex>`; `close()` kills
what still runs inside and deletes the namespace, and creating a link first deletes those
left by dead processes. Addresses come from 10.213.0.0/16 and exist only on the two TUN
devices; nothing is routed beyond them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import ipaddress
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TypeVar

__all__ = [
    "Conditions",
    "DirectionStats",
    "Link",
    "Namespace",
    "NetworkUnavailableError",
    "unavailable_reason",
]

Direction = Literal["up", "down"]
Which = Literal["up", "down", "both"]
DIRECTIONS: tuple[Direction, Direction] = ("up", "down")
T = TypeVar("T")

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
NETNS_DIR = Path("/var/run/netns")
PREFIX = "fogline-"
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
MAX_PACKET = 65_535
READ_BURST = 64  # packets read per direction per wake-up, so one side cannot starve the other


class NetworkUnavailableError(RuntimeError):
    """Namespaces or TUN devices cannot be made here (not root, no /dev/net/tun, no `ip`)."""


def unavailable_reason() -> str | None:
    """Why a `Link` cannot be built on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and TUN devices)"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun does not exist"
    return None


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise NetworkUnavailableError(f"{' '.join(args)}: {done.stderr.strip()}")


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Namespace:
    """A named network namespace with its loopback up; `close()` empties and deletes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = NETNS_DIR / name
        _run("ip", "netns", "add", name)
        try:
            _run("ip", "-n", name, "link", "set", "lo", "up")
        except BaseException:
            _run("ip", "netns", "del", name)
            raise

    @classmethod
    def fresh(cls) -> Self:
        """A namespace with a unique name; first removes those whose creator has died."""
        sweep_stale()
        return cls(f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def exec_args(self, command: Sequence[str]) -> list[str]:
        """Arguments that run `command` inside (the pid is the command's own)."""
        return ["ip", "netns", "exec", self.name, *command]

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on a thread inside the namespace; threads it starts stay inside too.

        Sockets keep the namespace they were made in, so a socket (or a client that made
        one) can be used from any thread afterwards.
        """
        result: list[T] = []
        error: list[BaseException] = []

        def body() -> None:
            try:
                _setns(self.path)
                result.append(fn())
            except BaseException as exc:  # handed to the caller
                error.append(exc)

        thread = threading.Thread(target=body, name=f"netns[{self.name}]", daemon=True)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def connect(self, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
        """A TCP socket connected from inside the namespace."""
        return self.call(lambda: socket.create_connection(address, timeout=timeout))

    def pids(self) -> list[int]:
        done = subprocess.run(  # noqa: S603
            ["ip", "netns", "pids", self.name],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(p) for p in done.stdout.split() if p.isdigit()]

    def close(self, grace: float = 5.0) -> None:
        """SIGTERM what still runs inside, SIGKILL it after `grace`, delete the namespace."""
        if not self.path.exists():
            return
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p) and not _reap(p)]
            time.sleep(0.05)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)  # noqa: S603, S607


def _reap(pid: int) -> bool:
    """Collect our own exited child (a zombie still counts as alive to kill(0))."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def sweep_stale() -> list[str]:
    """Delete `fogline-<pid>-*` namespaces whose creating process is gone."""
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in NETNS_DIR.iterdir():
        parts = entry.name.split("-")
        if len(parts) != 3 or f"{parts[0]}-" != PREFIX or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        ns = Namespace.__new__(Namespace)
        ns.name, ns.path = entry.name, entry
        ns.close(grace=1.0)
        removed.append(entry.name)
    return removed


@dataclass(frozen=True, slots=True)
class Conditions:
    """What one direction of the link does to packets; zero everywhere is a clean wire."""

    latency: float = 0.0  # seconds added to every packet, after the bottleneck
    jitter: float = 0.0  # +- seconds, uniform, around `latency` (order is kept)
    loss: float = 0.0  # probability that a packet is dropped on arrival
    reorder: float = 0.0  # probability that a packet is held back `reorder_delay` longer
    reorder_delay: float = 0.02  # seconds
    rate: float | None = None  # bytes/s of the bottleneck; None: unlimited
    queue: int | None = None  # bytes the bottleneck buffers (None: 1 s of rate, >= 2 MTU)

    def __post_init__(self) -> None:
        for name in ("loss", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
        for name in ("latency", "jitter", "reorder_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected seconds >= 0, got {getattr(self, name)!r}")
        if self.jitter > self.latency:
            raise ValueError(f"jitter ({self.jitter}) cannot exceed latency ({self.latency})")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate: expected bytes/s > 0, got {self.rate!r}")
        if self.queue is not None and self.queue <= 0:
            raise ValueError(f"queue: expected bytes > 0, got {self.queue!r}")

    def queue_limit(self, mtu: int) -> int:
        if self.queue is not None:
            return self.queue
        return max(2 * mtu, int(self.rate or 0))


@dataclass(slots=True)
class DirectionStats:
    """Counters of one direction. `bytes` are whole IP packets; `tcp_*` their TCP payload."""

    packets: int = 0  # offered: read from the sending side's TUN
    bytes: int = 0
    delivered_packets: int = 0  # written into the receiving side's TUN
    delivered_bytes: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0  # tail drops at the bottleneck
    dropped_cut: int = 0  # partitioned or flapped down (on arrival or while in flight)
    dropped_other: int = 0  # not IPv4 (e.g. IPv6 neighbour discovery): never forwarded
    reordered: int = 0
    tcp_payload_bytes: int = 0  # offered TCP payload, retransmissions included
    tcp_new_bytes: int = 0  # offered TCP payload sent for the first time (per connection)
    tcp_delivered_payload_bytes: int = 0
    tcp_syn: int = 0  # connection attempts (SYN without ACK)
    tcp_rst: int = 0
    max_queue_bytes: int = 0  # deepest the bottleneck queue has been

    @property
    def tcp_retransmitted_bytes(self) -> int:
        return self.tcp_payload_bytes - self.tcp_new_bytes

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(slots=True)
class _Lane:
    """One direction's live state, touched only by the forwarder (under the link's lock)."""

    src: int  # fd read
    dst: int  # fd written
    conditions: Conditions = field(default_factory=Conditions)
    cut: bool = False
    busy_until: float = 0.0  # when the bottleneck finishes serializing what it holds
    last_delivery: float = 0.0  # order is kept: nothing is delivered before its predecessor
    stats: DirectionStats = field(default_factory=DirectionStats)
    seq_high: dict[bytes, int] = field(default_factory=dict)  # per TCP flow: highest end seq
    syn_at: list[float] = field(default_factory=list)  # time.monotonic() of each SYN offered


@dataclass(frozen=True, slots=True)
class _Flap:
    started: float
    down: float
    up: float
    start_down: bool

    def is_down(self, now: float) -> bool:
        phase = (now - self.started) % (self.down + self.up)
        return phase < self.down if self.start_down else phase >= self.up


class Link:
    """The shaped link between a fresh namespace ("inside") and the caller's ("outside")."""

    def __init__(self, mtu: int = 1500, seed: int | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetworkUnavailableError(reason)
        self.mtu = mtu
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, Direction, bytes]] = []
        self._order = 0
        self._flap: _Flap | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.events: list[tuple[float, str]] = []  # (time.monotonic(), what changed)
        self._fds: list[int] = []
        self.namespace = Namespace.fresh()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, mtu: int = 1500, seed: int | None = None) -> Self:
        return cls(mtu, seed)

    def _build(self) -> None:
        tag = self.namespace.name.rsplit("-", 1)[1]
        self.outside_dev, self.inside_dev = f"flo{tag}", f"fli{tag}"
        net = _free_subnet()
        self.outside_ip, self.inside_ip = str(net[1]), str(net[2])
        ns = self.namespace.name
        # IPv6 off before the devices come up, so that no router solicitations cross.
        outside = _open_tun(self.outside_dev)
        self._fds.append(outside)
        inside = self.namespace.call(lambda: _open_tun(self.inside_dev))
        self._fds.append(inside)
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{self.outside_dev}/disable_ipv6").write_text("1")
        subprocess.run(  # noqa: S603
            [  # noqa: S607
                "ip", "netns", "exec", ns,
                "sysctl", "-qw", f"net.ipv6.conf.{self.inside_dev}.disable_ipv6=1",
            ],
            capture_output=True,
            check=False,
        )  # fmt: skip
        mtu = str(self.mtu)
        _run("ip", "addr", "add", self.outside_ip, "peer", self.inside_ip, "dev", self.outside_dev)
        _run("ip", "link", "set", self.outside_dev, "mtu", mtu, "up")
        inside_dev = self.inside_dev
        _run(
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            self.inside_ip,
            "peer",
            self.outside_ip,
            "dev",
            inside_dev,
        )
        _run("ip", "-n", ns, "link", "set", self.inside_dev, "mtu", mtu, "up")
        self._lanes: dict[Direction, _Lane] = {
            "up": _Lane(src=inside, dst=outside),
            "down": _Lane(src=outside, dst=inside),
        }
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._fds += [self._wake_r, self._wake_w]
        self._thread = threading.Thread(
            target=self._forward, name=f"link[{self.namespace.name}]", daemon=True
        )
        self._thread.start()

    # -- control (any thread) -----------------------------------------------------------------

    def set(self, direction: Which = "both", **changes: float | None) -> None:
        """Change conditions, e.g. `set(loss=0.25)`; unnamed ones keep their values."""
        with self._lock:
            for d in self._which(direction):
                lane = self._lanes[d]
                lane.conditions = replace(lane.conditions, **changes)  # type: ignore[arg-type]
            self._note(f"set {direction} {changes}")
        self._poke()

    def reset(self, direction: Which = "both") -> None:
        """A clean wire again (the cut and the flap stay as they are)."""
        with self._lock:
            for d in self._which(direction):
                self._lanes[d].conditions = Conditions()
            self._note(f"reset {direction}")
        self._poke()

    def conditions(self, direction: Direction) -> Conditions:
        return self._lanes[direction].conditions

    def partition(self, direction: Which = "both") -> None:
        """Drop everything, silently (no RST, no ICMP), until `heal()`."""
        with self._lock:
            for d in self._which(direction):
                self._lanes[d].cut = True
            self._flap = None
            self._note(f"partition {direction}")

    def heal(self) -> None:
        """End a partition or a flap."""
        with self._lock:
            for lane in self._lanes.values():
                lane.cut = False
            self._flap = None
            self._note("heal")
        self._poke()

    def flap(self, down: float, up: float, *, start_down: bool = True) -> None:
        """Down `down` seconds, up `up` seconds, repeatedly (both directions) until `heal()`."""
        if down <= 0 or up <= 0:
            raise ValueError("flap: down and up must be > 0 seconds")
        with self._lock:
            self._flap = _Flap(time.monotonic(), down, up, start_down)
            self._note(f"flap down={down} up={up}")
        self._poke()

    def is_down(self, direction: Direction, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        flap = self._flap
        return self._lanes[direction].cut or (flap is not None and flap.is_down(now))

    def stats(self) -> dict[Direction, DirectionStats]:
        """A consistent copy of both directions' counters."""
        with self._lock:
            return {d: replace(lane.stats) for d, lane in self._lanes.items()}

    def syn_times(self, direction: Direction) -> list[float]:
        """When (time.monotonic()) each connection attempt was offered in that direction."""
        with self._lock:
            return list(self._lanes[direction].syn_at)

    def queued(self) -> int:
        """Packets in flight inside the forwarder (delayed or queued)."""
        with self._lock:
            return len(self._heap)

    def _which(self, direction: Which) -> tuple[Direction, ...]:
        if direction == "both":
            return DIRECTIONS
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: expected up, down or both, got {direction!r}")
        return (direction,)

    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop forwarding, remove both devices, empty and delete the namespace."""
        self._stop.set()
        if self._thread is not None:
            self._poke()
            self._thread.join(5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # a TUN device that is not persistent goes with its fd
        self._fds.clear()
        self.namespace.close()

    # -- the forwarder thread -----------------------------------------------------------------

    def _forward(self) -> None:
        poller = select.poll()
        by_fd: dict[int, Direction] = {}
        for d, lane in self._lanes.items():
            poller.register(lane.src, select.POLLIN)
            by_fd[lane.src] = d
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set():
            with self._lock:
                due = self._heap[0][0] if self._heap else None
            wait = 100.0 if due is None else max(0.0, due - time.monotonic()) * 1000
            try:
                ready = poller.poll(min(wait, 100.0))
            except InterruptedError:
                continue
            for fd, _ in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                self._read(by_fd[fd])
            self._deliver()

    def _read(self, direction: Direction) -> None:
        lane = self._lanes[direction]
        for _ in range(READ_BURST):
            try:
                packet = os.read(lane.src, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the device went away (closing)
                return
            with self._lock:
                self._arrive(direction, lane, packet, time.monotonic())

    def _arrive(self, direction: Direction, lane: _Lane, packet: bytes, now: float) -> None:
        st = lane.stats
        st.packets += 1
        st.bytes += len(packet)
        tcp = _tcp_info(packet)
        if tcp is None and (not packet or packet[0] >> 4 != 4):
            st.dropped_other += 1
            return
        if tcp is not None:
            self._count_tcp(lane, tcp, now)
        cond = lane.conditions
        if self.is_down(direction, now):
            st.dropped_cut += 1
            return
        if cond.loss and self._rng.random() < cond.loss:
            st.dropped_loss += 1
            return
        leaves = now
        if cond.rate is not None:
            backlog = max(0.0, lane.busy_until - now) * cond.rate
            if backlog + len(packet) > cond.queue_limit(self.mtu):
                st.dropped_queue += 1
                return
            st.max_queue_bytes = max(st.max_queue_bytes, int(backlog) + len(packet))
            lane.busy_until = max(now, lane.busy_until) + len(packet) / cond.rate
            leaves = lane.busy_until
        delay = cond.latency
        if cond.jitter:
            delay += self._rng.uniform(-cond.jitter, cond.jitter)
        at = leaves + delay
        if cond.reorder and self._rng.random() < cond.reorder:
            at += cond.reorder_delay  # held back; does not hold back those behind it
            st.reordered += 1
        else:
            at = max(at, lane.last_delivery)
            lane.last_delivery = at
        self._order += 1
        heapq.heappush(self._heap, (at, self._order, direction, packet))

    def _count_tcp(self, lane: _Lane, tcp: _Tcp, now: float) -> None:
        st = lane.stats
        if tcp.syn and not tcp.ack:
            st.tcp_syn += 1
            lane.syn_at.append(now)
        if tcp.rst:
            st.tcp_rst += 1
        if tcp.syn:  # a new connection on this 4-tuple: its stream starts after the SYN
            lane.seq_high[tcp.flow] = (tcp.seq + 1) & 0xFFFFFFFF
        if not tcp.payload:
            return
        st.tcp_payload_bytes += tcp.payload
        end = (tcp.seq + tcp.payload) & 0xFFFFFFFF
        high = lane.seq_high.get(tcp.flow)
        if high is None:
            st.tcp_new_bytes += tcp.payload
            lane.seq_high[tcp.flow] = end
            return
        ahead = (end - high) & 0xFFFFFFFF
        if 0 < ahead < 1 << 31:
            st.tcp_new_bytes += min(tcp.payload, ahead)
            lane.seq_high[tcp.flow] = end

    def _deliver(self) -> None:
        now = time.monotonic()
        out: list[tuple[Direction, bytes]] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, direction, packet = heapq.heappop(self._heap)
                lane = self._lanes[direction]
                if self.is_down(direction, now):
                    lane.stats.dropped_cut += 1
                    continue
                lane.stats.delivered_packets += 1
                lane.stats.delivered_bytes += len(packet)
                tcp = _tcp_info(packet)
                if tcp is not None:
                    lane.stats.tcp_delivered_payload_bytes += tcp.payload
                out.append((direction, packet))
        for direction, packet in out:
            with contextlib.suppress(OSError):  # a full or vanished device: a lost packet
                os.write(self._lanes[direction].dst, packet)


@dataclass(frozen=True, slots=True)
class _Tcp:
    flow: bytes
    seq: int
    payload: int
    syn: bool
    ack: bool
    rst: bool


def _tcp_info(packet: bytes) -> _Tcp | None:
    """The TCP facts of an IPv4 packet, or None if it is not TCP over IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if len(packet) < ihl + 20:
        return None
    offset = (packet[ihl + 12] >> 4) * 4
    flags = packet[ihl + 13]
    return _Tcp(
        flow=packet[12:20] + packet[ihl : ihl + 4],
        seq=int.from_bytes(packet[ihl + 4 : ihl + 8], "big"),
        payload=max(0, total - ihl - offset),
        syn=bool(flags & 0x02),
        ack=bool(flags & 0x10),
        rst=bool(flags & 0x04),
    )


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of 10.213.0.0/16 that no interface of this namespace uses yet."""
    done = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False)  # noqa: S607
    used = done.stdout
    for _ in range(1000):
        block = random.randrange(SUBNET.num_addresses // 4)
        net = ipaddress.IPv4Network((int(SUBNET.network_address) + 4 * block, 30))
        if f" {net[1]}" not in used and f" {net[2]}" not in used:
            return net
    raise NetworkUnavailableError("no free /30 left in 10.213.0.0/16")
