"""Inside a sandbox with the ``allow`` policy: make the run's proxy look like a local one.

    python -I -S forward.py SOCKET PORT -- ARGV...

The sandbox's network namespace has a loopback interface and nothing else; the proxy is
reachable only through the unix socket ``SOCKET`` mounted into it.  This listens on
``127.0.0.1:PORT`` (before the agent runs: no start-up race), leaves a relay behind in
the background (a grandchild: the agent never sees an extra child) and then ``exec``s
``ARGV`` -- the agent keeps the pid bubblewrap gave it, so exit codes and signals are
untouched.  The relay ends with the sandbox: bubblewrap's pid namespace goes when the
agent does, and the relay also watches the agent through a pidfd.  Its stdio is
/dev/null and it closes every other inherited descriptor, so it never holds the agent's
output pipe open.  Exit 125: the forwarder could not start (the command never ran).

Standard library only (run with ``-I -S``); a thread per direction per connection.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading

EXIT_FAILED = 125


def _fail(message: str) -> None:
    sys.stderr.write(f"forkyard-forward: {message}\n")
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(131072):
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _connection(client: socket.socket, path: str) -> None:
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
        upstream.close()
        client.close()
        return
    back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    back.start()
    _copy(client, upstream)
    back.join()
    upstream.close()
    client.close()


def _serve(listener: socket.socket, path: str, pidfd: int) -> None:
    while True:
        ready, _, _ = select.select([listener.fileno(), pidfd], [], [])
        if pidfd in ready:
            return  # the agent is gone
        try:
            client, _ = listener.accept()
        except OSError:
            continue
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_connection, args=(client, path), daemon=True).start()


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--" or not argv[1].isdigit():
        _fail("usage: forward.py SOCKET PORT -- ARGV...")
    path, port, command = argv[0], int(argv[1]), argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        pidfd = os.pidfd_open(os.getpid())
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port}: {exc}")
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
                    _serve(listener, path, pidfd)
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    listener.close()
    os.close(pidfd)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"forkyard-forward: cannot run {command[0]!r}: {exc.strerror}\n")
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


if __name__ == "__main__":
    main(sys.argv[1:])
