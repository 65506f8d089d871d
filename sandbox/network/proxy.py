"""The run's network proxy: the only way out of a sandbox whose policy is ``allow``.

One :class:`NetworkProxy` per run lives in forkyard's own process (threads: a crash of
forkyard takes it along, nothing is left running).  Each sandbox gets a listener of its
own -- a unix socket in a directory of its own, bind-mounted read-only into the sandbox
(``sandbox/network/policy.py``) -- with that sandbox's allowlist, so decisions are
per task and one task's allowlist is never another's.

It speaks what proxy-aware clients send:

- ``CONNECT host:port``: a byte tunnel (HTTPS; TLS is not inspected);
- plain HTTP with an absolute URI: the request is sent on in origin form with
  ``Connection: close`` and the answer streamed back.

A host outside the allowlist gets ``403`` and a body naming the policy; a name that
resolves only to private, loopback or link-local addresses is refused too (otherwise
whoever controls an allowed name's DNS reaches the host's own services), unless it is
one of the operator's ``hosts`` overrides.  The proxy connects to the address it
checked; it never resolves twice.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gitproc.process import pid_alive
from sandbox.network.allowlist import Allowlist, canonical_host, is_ip, is_public, split_host_port

SOCKET_NAME = "proxy.sock"
_HEAD_MAX = 64 * 1024
_BUF = 128 * 1024
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                  "proxy-authenticate", "te", "trailer", "upgrade"})


@dataclass(frozen=True)
class Decision:
    """One request the proxy allowed or refused, and for which sandbox."""

    time: float
    key: str            # the listener: the sandbox it belongs to
    method: str
    host: str
    port: int
    allowed: bool
    reason: str         # allowlist | hosts | not-allowlisted | non-public-address | ...


class _Refused(Exception):
    def __init__(self, status: int, text: str, body: str) -> None:
        super().__init__(body)
        self.status, self.text, self.body = status, text, body


class NetworkProxy:
    """Allowlisting HTTP proxy over unix sockets, one listener per sandbox.

    ``hosts``: static name overrides, ``{"name": "ip:port"}`` (like ``/etc/hosts`` with a
    port), trusted as written (private addresses allowed); ``on_decision``: called with
    every :class:`Decision` (from the proxy's threads; must not block).
    """

    def __init__(self, *, hosts: Mapping[str, str] | None = None,
                 on_decision: Callable[[Decision], None] | None = None,
                 max_connections: int = 256, connect_timeout: float = 10.0,
                 head_timeout: float = 30.0) -> None:
        self._hosts: dict[str, tuple[str, int]] = {}
        for name, target in (hosts or {}).items():
            ip, port = split_host_port(target)
            if port is None or not is_ip(ip):
                raise ValueError(f"proxy host override {name}: {target!r} is not ip:port")
            self._hosts[canonical_host(name)] = (ip, port)
        self._on_decision = on_decision
        self._slots = threading.BoundedSemaphore(max_connections)
        self._connect_timeout = connect_timeout
        self._head_timeout = head_timeout
        # Short (sun_path <= 107); named after this process, so that `forkyard gc` can
        # tell a killed run's (remove_stale_dirs).
        self._root = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))
        self._selector = selectors.DefaultSelector()
        self._listeners: dict[str, tuple[socket.socket, Allowlist]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._serial = itertools.count()
        self.decisions: list[Decision] = []
        self._thread = threading.Thread(target=self._serve, name="forkyard-netproxy", daemon=True)
        self._thread.start()

    # -- listeners ----------------------------------------------------------------------

    def open(self, key: str, allow: Iterable[str]) -> Path:
        """A listener for sandbox ``key`` with ``allow``; returns the directory holding
        its socket (the directory, not the socket, is what the sandbox mounts)."""
        allowlist = Allowlist(allow)
        directory = self._root / f"s{next(self._serial)}"  # short: the socket path must be
        directory.mkdir(mode=0o755)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(directory / SOCKET_NAME))
        sock.listen(128)
        sock.setblocking(False)
        with self._lock:
            old = self._listeners.pop(key, None)
            self._listeners[key] = (sock, allowlist)
            self._selector.register(sock, selectors.EVENT_READ, key)
        if old is not None:
            self._drop(old[0])
        self._wake()
        return directory

    def close(self, key: str) -> None:
        """Stop listening for sandbox ``key`` (its open tunnels end with their peers)."""
        with self._lock:
            entry = self._listeners.pop(key, None)
        if entry is not None:
            self._drop(entry[0])

    def stop(self) -> None:
        """Close every listener, end the thread, remove the socket directories."""
        with self._lock:
            self._stopping = True
            entries = list(self._listeners.values())
            self._listeners.clear()
        for sock, _ in entries:
            self._drop(sock)
        self._wake()
        self._thread.join(5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def _drop(self, sock: socket.socket) -> None:
        path = sock.getsockname()
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(os.path.dirname(path))

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the accept loop ----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            try:
                events = self._selector.select(timeout=1.0)
            except (OSError, ValueError):
                return  # closed under us by stop()
            for skey, _ in events:
                if skey.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                with self._lock:
                    entry = self._listeners.get(skey.data)
                if entry is None or entry[0] is not skey.fileobj:
                    continue
                try:
                    client, _ = entry[0].accept()
                except OSError:
                    continue
                if not self._slots.acquire(blocking=False):
                    _answer(client, 503, "Service Unavailable", "forkyard: too many proxy connections\n")
                    client.close()
                    continue
                threading.Thread(target=self._handle, args=(client, skey.data, entry[1]),
                                 daemon=True).start()

    # -- one connection -----------------------------------------------------------------

    def _handle(self, client: socket.socket, key: str, allowlist: Allowlist) -> None:
        upstream: socket.socket | None = None
        try:
            client.setblocking(True)
            client.settimeout(self._head_timeout)
            head, rest = _read_head(client)
            client.settimeout(None)
            method, host, port, forward = _parse(head)
            upstream = self._connect(key, allowlist, method, host, port)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                upstream.sendall(forward)
            if rest:
                upstream.sendall(rest)
            _relay(client, upstream)
        except _Refused as r:
            _answer(client, r.status, r.text, r.body)
        except OSError:
            pass  # a peer went away
        finally:
            if upstream is not None:
                upstream.close()
            client.close()
            self._slots.release()

    def _record(self, key: str, method: str, host: str, port: int, allowed: bool, reason: str) -> None:
        d = Decision(time.time(), key, method, host, port, allowed, reason)
        self.decisions.append(d)
        if self._on_decision is not None:
            with contextlib.suppress(Exception):
                self._on_decision(d)

    def _connect(self, key: str, allowlist: Allowlist, method: str, host: str, port: int) -> socket.socket:
        def refuse(reason: str, why: str) -> _Refused:
            self._record(key, method, host, port, False, reason)
            listed = ", ".join(allowlist.entries) or "nothing"
            return _Refused(403, "Forbidden", f"forkyard: {host}:{port} is blocked ({why}); this "
                            f"task's network policy allows {listed} (limits.network.allow)\n")

        if not allowlist.allows(host, port):
            raise refuse("not-allowlisted", "not in the allowlist")
        if host in self._hosts:
            targets, reason = [self._hosts[host]], "hosts"
        elif is_ip(host):
            targets, reason = [(host, port)], "allowlist-ip"
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise _Refused(502, "Bad Gateway", f"forkyard: cannot resolve {host}: {exc}\n") from None
            found = list(dict.fromkeys((str(i[4][0]), port) for i in infos))
            targets, reason = [t for t in found if is_public(t[0])], "allowlist"
            if not targets:
                raise refuse("non-public-address", "it resolves to private addresses only")
        self._record(key, method, host, port, True, reason)
        error: OSError | None = None
        for ip, p in targets:
            try:
                sock = socket.create_connection((ip, p), timeout=self._connect_timeout)
            except OSError as exc:
                error = exc
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise _Refused(502, "Bad Gateway", f"forkyard: cannot connect to {host}:{port}: {error}\n")


DIR_PREFIX = "forkyard-net-"


def remove_stale_dirs() -> list[str]:
    """Remove the socket directories of proxies whose process is gone (a run killed with
    SIGKILL never stops its proxy); the directories removed."""
    removed = []
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{DIR_PREFIX}*-*"):
        pid = path.name.removeprefix(DIR_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or path.is_symlink() or not path.is_dir():
            continue
        if pid_alive(int(pid)):
            continue  # its process lives (or the pid was taken again: left for later)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_MAX:
            raise _Refused(431, "Request Header Fields Too Large", "forkyard: request head too large\n")
        chunk = sock.recv(8192)
        if not chunk:
            raise OSError("client closed before a request")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse(head: bytes) -> tuple[str, str, int, bytes]:
    """(method, host, port, the request to send upstream) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise _Refused(400, "Bad Request", "forkyard: malformed request line\n")
    method, target, version = parts
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name or "\t" in name:
            raise _Refused(400, "Bad Request", "forkyard: malformed header\n")
        headers.append((name, value.strip()))
    try:
        if method == "CONNECT":
            host, port = split_host_port(target)
            if port is None:
                raise ValueError("CONNECT needs host:port")
            return method, canonical_host(host), port, b""
        if not target.lower().startswith("http://"):
            raise ValueError("send an absolute http:// URL, or CONNECT for https")
        url = urlsplit(target)
        if url.username is not None or url.password is not None or not url.hostname:
            raise ValueError("no host, or user info in the URL")
        host, port = canonical_host(url.hostname), url.port or 80
    except ValueError as exc:
        raise _Refused(400, "Bad Request", f"forkyard: {exc}\n") from None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    dropped = {t.strip().lower() for n, v in headers if n.lower() == "connection" for t in v.split(",")}
    authority = (f"[{host}]" if ":" in host else host) + ("" if port == 80 else f":{port}")
    out = [f"{method} {path} {version}", f"Host: {authority}"]
    out += [f"{n}: {v}" for n, v in headers
            if n.lower() not in _HOP and n.lower() != "host" and n.lower() not in dropped]
    out.append("Connection: close")
    return method, host, port, ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(_BUF):
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
    except OSError:
        for s in (src, dst):  # a reset on one side ends both directions
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    other = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    other.start()
    _copy(client, upstream)
    other.join()


def _answer(sock: socket.socket, status: int, text: str, body: str) -> None:
    data = body.encode()
    head = (f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        sock.sendall(head + data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        while sock.recv(65536):  # let the client read the answer before we close
            pass
