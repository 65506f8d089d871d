"""The exec shim: put *this* process into its sandbox, then ``exec`` the agent.

    python sandbox/shim.py [--procs FILE]... [--rlimit NAME=VALUE]...
                           [--landlock-network 0|1|PORT [--landlock-rw PATH]... [--landlock-dev PATH]...]
                           [--write-fd FD=VALUE]... [--gate FD] [--forward SOCKET:PORT]
                           -- ARGV...

It writes its own pid to every ``cgroup.procs`` given (so the agent is inside its
cgroups before its first instruction runs, and everything it forks inherits them), sets
rlimits (the fallback when no cgroup is writable), optionally enforces a Landlock
ruleset, writes each VALUE to its inherited FD (a cgroup control file opened outside the
sandbox: the CPU quota, applied last so that the set-up above is not throttled), and
replaces itself with ``ARGV``.  With ``--forward`` it first starts the ``allow`` network
policy's forwarder (below).

With ``--gate FD`` the shim is started ahead of the agent's turn (a *warm* start: see
``sandbox/backends/worktree/backend.py``): everything above but the writes is done, then it
blocks reading FD to its end.  What it reads is the command and the whole environment,
as NUL-terminated ``A<arg>`` and ``E<NAME=VALUE>`` entries (known only when the task
starts: its base, for one); ``ARGV`` is empty.  Nothing read (the run gave the start
up): exit 125 without running anything.  Why not ``preexec_fn``: it runs Python
between fork and exec in a multi-threaded parent (the output pumps), which can deadlock,
and it cannot be placed *inside* bubblewrap.  The shim is run with ``-I -S``, its module
imported (``SHIM_ARGV`` in ``sandbox/backends/worktree/config.py``), also inside
bubblewrap, for Landlock (the ruleset is made with raw syscalls through ``_ctypes``), so
it must only use the standard library -- and little of it: every module imported here
is paid for by every agent's start (no ``json``: it pulls in ``re``).
"""

from __future__ import annotations

import os
import resource
import sys

RLIMITS = {
    "as": resource.RLIMIT_AS,
    "nproc": resource.RLIMIT_NPROC,
    "cpu": resource.RLIMIT_CPU,
    "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE,
}

EXIT_SHIM_FAILED = 125  # like env(1)/docker: "the wrapper failed, the command never ran"


def _libc() -> dict[str, object]:
    """libc's ``syscall``, ``prctl`` and ``capset``, with ``errno`` kept, through
    ``_ctypes`` (the C half of ctypes): ``import ctypes`` alone costs some 4 ms of every
    agent's start, this about one.  Arguments go as ctypes would pass them: ``int`` as
    a C int, ``bytes`` as a pointer to their buffer, ``None`` as NULL."""
    import _ctypes

    class Long(_ctypes._SimpleCData):  # type: ignore[misc,name-defined]
        _type_ = "l"

    class Int(_ctypes._SimpleCData):  # type: ignore[misc,name-defined]
        _type_ = "i"

    class Libc:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # this program

    def function(name: str, result: type) -> object:
        class Function(_ctypes.CFuncPtr):  # type: ignore[misc,name-defined]
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = result
        return Function((name, Libc))  # type: ignore[arg-type]  # needs only ._handle

    return {"syscall": function("syscall", Long), "prctl": function("prctl", Int),
            "capset": function("capset", Int), "errno": _ctypes.get_errno}


def _u(value: int, size: int) -> bytes:
    """``value`` as a native-endian C unsigned integer of ``size`` bytes."""
    return value.to_bytes(size, sys.byteorder)


def _drop_capabilities(libc: dict[str, object]) -> None:
    """Drop every capability for good (bounding set, ambient, effective/permitted).

    Landlock does not take root's capabilities away; without this a root agent confined
    by Landlock alone could still mknod, kill other root processes' children via
    ptrace, load modules...  Emptying the bounding set makes the drop survive exec.
    """
    prctl, capset = libc["prctl"], libc["capset"]
    pr_capbset_drop, pr_cap_ambient, pr_cap_ambient_clear_all = 24, 47, 4
    for cap in range(64):
        prctl(pr_capbset_drop, cap, 0, 0, 0)  # type: ignore[operator]  # EINVAL past the last
    prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0)  # type: ignore[operator]
    # struct __user_cap_header_struct {u32 version; int pid} (_LINUX_CAPABILITY_VERSION_3),
    # then two struct __user_cap_data_struct {u32 effective, permitted, inheritable}: all 0.
    header, data = _u(0x20080522, 4) + _u(0, 4), bytes(24)
    if capset(header, data) != 0:  # type: ignore[operator]
        raise OSError(libc["errno"](), "capset failed")  # type: ignore[operator]


# Landlock, straight from the kernel ABI (linux/landlock.h) through _ctypes, so that the
# inner shim runs with ``-I -S`` like the outer one: no site-packages, no landlockpy
# import in the agent's critical path.  The flag values and their minimum ABI versions
# mirror landlockpy's (tests/sandbox/test_shim.py checks that they agree).
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # every architecture
PR_SET_NO_NEW_PRIVS = 38
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
NET_CONNECT_TCP = 1 << 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_MAKE_CHAR, FS_MAKE_BLOCK, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 6, 1 << 11, 1 << 14, 1 << 15
FS_MIN_ABI = {1 << bit: 1 for bit in range(13)} | {
    1 << 13: 2,   # REFER
    1 << 14: 3,   # TRUNCATE
    1 << 15: 5,   # IOCTL_DEV
    1 << 16: 9,   # RESOLVE_UNIX
}
NET_MIN_ABI = {1 << 0: 4, 1 << 1: 4, 1 << 2: 10, 1 << 3: 10}  # BIND/CONNECT TCP, UDP
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
SCOPE_MIN_ABI = {SCOPE_ABSTRACT_UNIX_SOCKET: 6, SCOPE_SIGNAL: 6}
RESTRICT_NO_NEW_PRIVS, RESTRICT_NO_NEW_PRIVS_ABI = 1 << 4, 11


def _for_abi(table: dict[int, int], abi: int) -> int:
    mask = 0
    for flag, min_abi in table.items():
        if abi >= min_abi:
            mask |= flag
    return mask


def landlock_masks(abi: int, network: bool) -> dict[str, int]:
    """The ruleset's rights for a kernel at ``abi`` (a pure function, for the tests)."""
    fs_all = _for_abi(FS_MIN_ABI, abi)
    net_off = not network
    # Abstract unix sockets are scoped whatever the network: with the host's network
    # namespace (``full``) they would reach the host's (X11, D-Bus...).
    scoped = (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) & _for_abi(SCOPE_MIN_ABI, abi)
    return {
        "handled_fs": fs_all,
        # Handling the network rights and granting none denies TCP bind/connect.
        "handled_net": _for_abi(NET_MIN_ABI, abi) if net_off else 0,
        "scoped": scoped,
        "writable": fs_all & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK),  # no device nodes
        "read": FS_READ_FILE | FS_READ_DIR | FS_EXECUTE,
        # Rules on a file (not a directory) may only carry file rights, else EINVAL.
        "file": (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV),
        "dev_extra": FS_WRITE_FILE | FS_IOCTL_DEV,
    }


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where there is no Landlock."""
    syscall = _libc()["syscall"]
    return max(0, int(syscall(SYS_CREATE_RULESET, None, 0, 1)))  # type: ignore[operator]


def _landlock(spec: dict[str, object]) -> None:
    """Enforce a Landlock ruleset: read/execute everywhere, write only in ``rw`` paths."""
    libc = _libc()
    syscall, errno = libc["syscall"], libc["errno"]

    def call(nr: int, *args: object) -> int:
        ret = int(syscall(nr, *args))  # type: ignore[operator]
        if ret == -1:
            err = int(errno())  # type: ignore[operator]
            raise OSError(err, f"landlock syscall {nr}: {os.strerror(err)}")
        return ret

    abi = call(SYS_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    m = landlock_masks(abi, bool(spec.get("network", True)))
    # struct landlock_ruleset_attr {u64 handled_access_fs, handled_access_net, scoped}.
    # It grew over the ABIs (net: ABI 4, scoped: ABI 6); older kernels reject a larger
    # size with non-zero tail fields, so pass the size the kernel knows.
    attr = _u(m["handled_fs"], 8) + _u(m["handled_net"], 8) + _u(m["scoped"], 8)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = call(SYS_CREATE_RULESET, attr, size, 0)
    try:
        def allow(path: str, access: int) -> None:
            granted = access & m["handled_fs"]
            if not granted:
                return
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:  # struct landlock_path_beneath_attr {u64 allowed_access; s32 parent_fd}, packed
                rule = _u(granted, 8) + fd.to_bytes(4, sys.byteorder, signed=True)
                call(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, rule, 0)
            finally:
                os.close(fd)

        allow("/", m["read"])
        for path in spec.get("dev", []):  # type: ignore[attr-defined]
            if os.path.exists(path):
                dev = m["read"] | m["dev_extra"]
                allow(path, dev if os.path.isdir(path) else dev & m["file"])
        for path in spec.get("rw", []):  # type: ignore[attr-defined]
            if os.path.exists(path):
                allow(path, m["writable"] if os.path.isdir(path) else m["writable"] & m["file"])
        port = int(spec.get("connect_port", 0))  # type: ignore[call-overload]
        if port and m["handled_net"] & NET_CONNECT_TCP:
            # The ``allow`` policy: TCP only to the proxy's forwarder (the netns has no
            # other interface than loopback anyway).  struct landlock_net_port_attr
            # {u64 allowed_access; u64 port}.
            rule = _u(NET_CONNECT_TCP, 8) + _u(port, 8)
            call(SYS_ADD_RULE, ruleset, RULE_NET_PORT, rule, 0)
        flags = 0
        if abi >= RESTRICT_NO_NEW_PRIVS_ABI:
            flags |= RESTRICT_NO_NEW_PRIVS
        elif libc["prctl"](PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:  # type: ignore[operator]
            err = int(errno())  # type: ignore[operator]
            raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        call(SYS_RESTRICT_SELF, ruleset, flags)
    finally:
        os.close(ruleset)
    _drop_capabilities(libc)


def _await_start(fd: int) -> tuple[list[str], dict[str, str]]:
    """Block until the ``--gate`` pipe is closed; the argv and environment it carried."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    command: list[str] = []
    env: dict[str, str] = {}
    for entry in b"".join(chunks).split(b"\0")[:-1]:
        kind, text = entry[:1], os.fsdecode(entry[1:])
        if kind == b"A":
            command.append(text)
        elif kind == b"E":
            name, _, value = text.partition("=")
            env[name] = value
    return command, env


def gate_payload(argv: list[str], env: dict[str, str]) -> bytes:
    """What :func:`_await_start` reads: ``argv`` and ``env`` as NUL-terminated entries."""
    entries = [b"A" + os.fsencode(a) for a in argv]
    entries += [b"E" + os.fsencode(f"{k}={v}") for k, v in env.items()]
    return b"".join(e + b"\0" for e in entries)


# The ``allow`` network policy's forwarder (``sandbox/network/policy.py``): inside the
# sandbox's network namespace, 127.0.0.1:PORT relayed to the run's proxy socket.  Done
# here, in the shim the sandbox runs anyway, rather than by a program of its own: one
# interpreter start less per agent.  Bound before Landlock (which then only grants
# connecting to PORT) and before a warm start's gate, so it is listening before the
# agent runs; the relay is a grandchild with /dev/null for stdio and no other inherited
# descriptor (it never holds the agent's output open), and it ends with the agent
# (bubblewrap's pid namespace; a pidfd as well).


def _copy(src: object, dst: object) -> None:
    import socket

    assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
    try:
        while chunk := src.recv(131072):
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
    except OSError:
        for sock in (src, dst):  # a reset on one side ends both
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _relay_one(client: object, path: str) -> None:
    import socket
    import threading

    assert isinstance(client, socket.socket)
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError as exc:
        body = f"forkyard: the run's network proxy is gone ({exc.strerror})\n".encode()
        try:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
    else:
        back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
        back.start()
        _copy(client, upstream)
        back.join()
    upstream.close()
    client.close()


def _forward(spec: str) -> None:
    """``--forward SOCKET:PORT``: listen, leave the relay behind, return (to exec).

    The agent's start waits only for the listener, made with the C ``_socket`` module:
    ``socket``, ``threading`` and what they pull in (``enum``, ``selectors``: about
    10 ms of every agent's start) are imported by the relay, at its first connection."""
    import _socket

    path, _, port = spec.rpartition(":")
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(128)
    pidfd = os.pidfd_open(os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        try:
            if os.fork() == 0:  # the relay
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                keep = sorted({listener.fileno(), pidfd})
                os.closerange(3, keep[0])
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, 65536)
                try:
                    import select

                    while True:
                        ready, _, _ = select.select([listener.fileno(), pidfd], [], [])
                        if pidfd in ready:
                            break  # the agent is gone
                        try:
                            fd, _ = listener._accept()  # type: ignore[attr-defined]
                        except OSError:
                            continue
                        import socket
                        import threading

                        client = socket.socket(fileno=fd)
                        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        threading.Thread(target=_relay_one, args=(client, path), daemon=True).start()
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    listener.close()
    os.close(pidfd)


def main(argv: list[str]) -> int:
    procs: list[str] = []
    limits: list[tuple[int, int]] = []
    landlock: dict[str, object] | None = None
    writes: list[tuple[int, bytes]] = []
    gate: int | None = None
    forward: str | None = None
    i = 0
    while i < len(argv) and argv[i] != "--":
        opt, value = argv[i], argv[i + 1]
        if opt == "--procs":
            procs.append(value)
        elif opt == "--rlimit":
            name, _, num = value.partition("=")
            limits.append((RLIMITS[name], int(num)))
        elif opt.startswith("--landlock-") and opt[11:] in ("network", "rw", "dev"):
            landlock = landlock or {"network": True, "rw": [], "dev": []}
            if opt == "--landlock-network":  # 1: any; 0: none; a port: to it only
                landlock["network"] = value == "1"
                landlock["connect_port"] = int(value) if value not in ("0", "1") else 0
            else:
                landlock[opt[11:]].append(value)  # type: ignore[attr-defined]
        elif opt == "--gate":
            gate = int(value)
        elif opt == "--forward":
            forward = value
        elif opt == "--write-fd":
            num, _, text = value.partition("=")
            writes.append((int(num), text.encode()))
        else:
            print(f"forkyard-shim: unknown option {opt}", file=sys.stderr)
            return EXIT_SHIM_FAILED
        i += 2
    command = argv[i + 1:]
    if not command and gate is None:
        print("forkyard-shim: no command after --", file=sys.stderr)
        return EXIT_SHIM_FAILED
    try:
        pid = str(os.getpid()).encode()
        for path in procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        for which, amount in limits:
            resource.setrlimit(which, (amount, amount))
        if forward is not None:
            _forward(forward)
        if landlock is not None:
            _landlock(landlock)
        env = None
        if gate is not None:
            command, env = _await_start(gate)
            if not command:
                return EXIT_SHIM_FAILED  # abandoned: the task never got its turn
        for out_fd, data in writes:  # no Landlock check: the file was opened outside
            os.write(out_fd, data)
            os.close(out_fd)
        if env is None:
            os.execvp(command[0], command)
        os.execve(command[0], command, env)
    except Exception as exc:  # anything before exec: the agent never started
        print(f"forkyard-shim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_SHIM_FAILED
    return EXIT_SHIM_FAILED  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
