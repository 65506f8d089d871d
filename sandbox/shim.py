"""The exec shim: put *this* process into its sandbox, then ``exec`` the agent.

    python sandbox/shim.py [--procs FILE]... [--rlimit NAME=VALUE]... [--landlock JSON] -- ARGV...

It writes its own pid to every ``cgroup.procs`` given (so the agent is inside its
cgroups before its first instruction runs, and everything it forks inherits them), sets
rlimits (the fallback when no cgroup is writable), optionally enforces a Landlock
ruleset, and replaces itself with ``ARGV``.  Why not ``preexec_fn``: it runs Python
between fork and exec in a multi-threaded parent (the output pumps), which can deadlock,
and it cannot be placed *inside* bubblewrap.  The shim is run by path with ``-I -S`` when
Landlock is not needed, so it must only use the standard library at import time.
"""

from __future__ import annotations

import json
import os
import resource
import sys

RLIMITS = {
    "as": resource.RLIMIT_AS,
    "nproc": resource.RLIMIT_NPROC,
    "cpu": resource.RLIMIT_CPU,
    "core": resource.RLIMIT_CORE,
}

EXIT_SHIM_FAILED = 125  # like env(1)/docker: "the wrapper failed, the command never ran"


def _drop_capabilities() -> None:
    """Drop every capability for good (bounding set, ambient, effective/permitted).

    Landlock does not take root's capabilities away; without this a root agent confined
    by Landlock alone could still mknod, kill other root processes' children via
    ptrace, load modules...  Emptying the bounding set makes the drop survive exec.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, pr_cap_ambient, pr_cap_ambient_clear_all = 24, 47, 4
    for cap in range(64):
        libc.prctl(pr_capbset_drop, cap, 0, 0, 0)  # EINVAL past the last cap: ignored
    libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _landlock(spec: dict[str, object]) -> None:
    """Enforce a Landlock ruleset: read/execute everywhere, write only in ``rw`` paths."""
    import landlockpy as ll

    fs_all = ll.fs_for_abi(ll.abi_version())
    writable = fs_all & ~(ll.AccessFS.MAKE_CHAR | ll.AccessFS.MAKE_BLOCK)  # no device nodes
    net_off = not spec.get("network", True)
    scopes = ll.Scope.SIGNAL | (ll.Scope.ABSTRACT_UNIX_SOCKET if net_off else ll.Scope.NONE)
    read = ll.AccessFS.READ_FILE | ll.AccessFS.READ_DIR | ll.AccessFS.EXECUTE
    # Rules on a file (not a directory) may only carry file rights, else EINVAL.
    file_rights = (ll.AccessFS.EXECUTE | ll.AccessFS.WRITE_FILE | ll.AccessFS.READ_FILE
                   | ll.AccessFS.TRUNCATE | ll.AccessFS.IOCTL_DEV)
    with ll.Ruleset(
        handled_fs=fs_all,
        # Handling the network rights and granting none denies TCP bind/connect.
        handled_net=ll.net_for_abi(ll.abi_version()) if net_off else ll.AccessNet.NONE,
        scoped=scopes,
    ) as rules:
        rules.allow_path("/", read)
        for path in spec.get("dev", []):  # type: ignore[attr-defined]
            if os.path.exists(path):
                dev = read | ll.AccessFS.WRITE_FILE | ll.AccessFS.IOCTL_DEV
                rules.allow_path(path, dev if os.path.isdir(path) else dev & file_rights)
        for path in spec.get("rw", []):  # type: ignore[attr-defined]
            if os.path.exists(path):
                rules.allow_path(path, writable if os.path.isdir(path) else writable & file_rights)
        rules.restrict()
    _drop_capabilities()


def main(argv: list[str]) -> int:
    procs: list[str] = []
    limits: list[tuple[int, int]] = []
    landlock: dict[str, object] | None = None
    i = 0
    while i < len(argv) and argv[i] != "--":
        opt, value = argv[i], argv[i + 1]
        if opt == "--procs":
            procs.append(value)
        elif opt == "--rlimit":
            name, _, num = value.partition("=")
            limits.append((RLIMITS[name], int(num)))
        elif opt == "--landlock":
            landlock = json.loads(value)
        else:
            print(f"forkyard-shim: unknown option {opt}", file=sys.stderr)
            return EXIT_SHIM_FAILED
        i += 2
    command = argv[i + 1:]
    if not command:
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
        if landlock is not None:
            _landlock(landlock)
        os.execvp(command[0], command)
    except Exception as exc:  # anything before exec: the agent never started
        print(f"forkyard-shim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_SHIM_FAILED
    return EXIT_SHIM_FAILED  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
