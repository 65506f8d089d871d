"""The docker backend: each task runs in a container with its worktree mounted at /work.

The worktree (branch ``forkyard/<run-id>/<task-id>`` at the task's base, at its place
``sandbox/places.py`` gives) is made on the host exactly as for the worktree backend;
the container only sees that directory, bind-mounted read-write at ``/work``.  The
container gets the task's limits (memory with swap equal to it, nano_cpus, pids), no
network unless the task allows it, no capabilities, no-new-privileges, a read-only root
with a tmpfs ``/tmp``, and an init process as PID 1 (so signals reach the agent and
zombies are reaped).  It runs as the worktree owner's uid:gid, so what the agent writes
is owned by whoever owns the repository and our host-side ``git add`` can read it.
(The container's name, environment and options are made in ``docker_spec.py``.)

The run deadline is ours: docker-py's ``wait(timeout=...)`` is only an HTTP timeout, so
a waiter thread blocks on the engine's wait while this thread watches our own clock and
the cancel event, and kills the container when either fires.  OOM is read from the
container state (``State.OOMKilled``) and believed only together with exit 137: a
memory-hungry child can be OOM-killed while the agent itself goes on and exits 0.

docker-py is imported lazily (by the factory choosing this module, and inside it by
:meth:`DockerBackend.client`), so a worktree-only user never needs a Docker engine.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gitproc.git import Repo
from sandbox.backends.base import (
    Backend,
    ExecResult,
    ExitCallback,
    LineCallback,
    Sandbox,
    SandboxSpec,
    Status,
)
from sandbox.backends.docker_spec import run_options
from sandbox.backends.worktree import WorktreeBackend, WorktreeConfig
from sandbox.backends.worktree.harvest import collect
from sandbox.confine import GitPaths
from sandbox.errors import BackendUnavailableError, ImageNotFoundError, SandboxError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

# A bound on the tail in characters too: one megabyte-long "line" must not bloat results.
LOG_TAIL_CHARS = 16000
# Exit status of a process killed by SIGKILL (128 + 9), which is what the kernel's OOM
# killer sends; tini (the init) passes its child's death by signal on as 128 + signal.
EXIT_SIGKILL = 137


class DockerConfig(BaseModel):
    """Configuration of the docker backend (``--backend docker``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["docker"] = "docker"
    """Backend discriminator."""

    image: str = "forkyard-agent:latest"
    """Image agents run in, unless a task names its own; it must already be present on
    the engine (build or pull it first: forkyard never pulls behind your back)."""

    user: str | None = None
    """``uid:gid`` to run as; default: the owner of the worktree, so files the agent
    writes are owned like the rest of the repository."""

    base_url: str | None = None
    """Docker engine address (``unix:///var/run/docker.sock``); default: ``DOCKER_HOST``
    or the local socket.  The engine must see the worktree's path: bind mounts are
    resolved on the engine's host."""

    kill_grace_s: float = Field(2.0, ge=0)
    """On timeout or cancel: seconds between SIGTERM and SIGKILL."""

    stop_timeout_s: float = Field(30.0, gt=0)
    """How long to wait for the engine to report an exit after a kill before giving up
    on the container."""

    log_tail_lines: int = Field(200, ge=1)
    """How many trailing output lines a result keeps."""

    sandbox_dir: Path | None = None
    """Where the worktrees mounted at ``/work`` go (see the worktree backend's option)."""


class DockerBackendError(SandboxError, RuntimeError):
    """The Docker engine refused or failed an operation on a task's container."""

    def __init__(self, operation: str, task: str, detail: str) -> None:
        super().__init__(f"docker: {operation} for task {task!r} failed: {detail}")
        self.operation = operation
        self.task = task
        self.detail = detail


class _LogPump:
    """Streams a container's output to ``on_line`` from a thread and keeps the tail."""

    def __init__(self, chunks: Iterator[bytes], on_line: LineCallback | None,
                 tail_lines: int, mask: Callable[[str], str] | None = None) -> None:
        self._chunks = chunks
        self._on_line = on_line
        self._mask = mask
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._thread = threading.Thread(target=self._pump, name="forkyard-docker-logs",
                                        daemon=True)
        self._thread.start()

    def _emit(self, line: str) -> None:
        if self._mask is not None:  # passed secrets never reach forkyard's records
            line = self._mask(line)
        self._tail.append(line)
        if self._on_line is not None:
            try:
                self._on_line(line)
            except Exception:
                # A broken display must not stop the log stream (or fail the task).
                pass

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        partial = ""
        try:
            for chunk in self._chunks:
                text = partial + decoder.decode(chunk)
                *lines, partial = text.split("\n")
                for line in lines:
                    self._emit(line.rstrip("\r"))
        except Exception:
            # The stream breaks when the container is removed under it; the tail so
            # far is all there is.
            pass
        partial += decoder.decode(b"", final=True)
        if partial:
            self._emit(partial)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def tail(self) -> str:
        return "\n".join(self._tail)[-LOG_TAIL_CHARS:]


class DockerBackend(Backend):
    """Runs each task in a Docker container (docker-py) over its own worktree."""

    name = "docker"

    def __init__(self, repo: Repo, config: DockerConfig | None = None) -> None:
        super().__init__(repo)
        self.config = config or DockerConfig()
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()  # agents start from many threads at once
        # The host side of a docker sandbox is a worktree sandbox: the same worktree,
        # run lock, copied ignored files, port lease, leftover commit and cleanup.  Its
        # cgroups and confinement are never used here (execute is ours).
        self._worktrees = WorktreeBackend(repo, WorktreeConfig(
            confinement="none", limits="none", sandbox_dir=self.config.sandbox_dir))

    # -- engine ------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        """A docker-py client; :class:`BackendUnavailableError` when no engine answers."""
        with self._client_lock:
            return self._client or self._connect()

    def _connect(self) -> docker.DockerClient:
        """Make the client (under the lock) and check that the engine answers."""
        try:
            import docker
        except ImportError as exc:  # pragma: no cover - docker is a dependency
            raise BackendUnavailableError("the docker backend needs docker-py") from exc
        try:
            # version="auto": ask the engine which API it speaks.  Debian's dockerd
            # 20.10 answers 1.41 and rejects newer request paths; a pinned version
            # (docker-py's constant is 1.45) would fail there.  docker-py ignores
            # DOCKER_API_VERSION, so this is the one place the version is settled.
            # Each running task holds two connections (its attach stream and its
            # wait); a pool sized for many parallel agents keeps them reusable.
            options: dict[str, Any] = {"version": "auto", "max_pool_size": 128}
            if self.config.base_url:
                client = docker.DockerClient(base_url=self.config.base_url, **options)
            else:
                client = docker.from_env(**options)
            client.ping()
        except docker.errors.DockerException as exc:
            raise BackendUnavailableError(
                f"no Docker engine answers ({exc}); start one (scripts/docker-up.sh) "
                "or choose --backend worktree"
            ) from exc
        self._client = client
        return client

    def image_for(self, spec: SandboxSpec) -> str:
        return spec.image or self.config.image

    def check_image(self, image: str) -> None:
        """:class:`ImageNotFoundError` unless ``image`` is present on the engine."""
        import docker

        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ImageNotFoundError(image) from None
        except docker.errors.APIError as exc:
            # An unparseable reference ("Bad:Name") is as much bad input as a missing one.
            if exc.status_code == 400:
                raise ImageNotFoundError(image) from None
            raise

    # -- the contract ------------------------------------------------------------

    def prepare(self, spec: SandboxSpec) -> Sandbox:
        """Check the image, then make the worktree (as the worktree backend does)."""
        # Everything that can be bad input is checked before anything is created.
        image = self.image_for(spec)
        self.check_image(image)
        # A sha, not "HEAD": the leftover commit is compared with it.
        spec = dataclasses.replace(spec, base=self.repo.rev_parse(spec.base))
        sandbox = self._worktrees.prepare(spec)
        try:
            sandbox.state["image"] = image
            # The agent can rewrite /work/.git (it is inside the mount).  Our host-side
            # `git add` would follow a forged "gitdir:" to a repository of the agent's
            # making (its config's core.fsmonitor runs as us), so remember the real one
            # now and restore it before committing.
            paths = GitPaths.of(self.repo.common_dir, sandbox.worktree, spec.branch)
            sandbox.state["gitdir"] = paths.gitdir
            sandbox.state["dotgit"] = (sandbox.worktree / ".git").read_bytes()
        except BaseException:
            self._worktrees.cleanup(sandbox)
            raise
        return sandbox

    def execute(
        self,
        sandbox: Sandbox,
        on_line: LineCallback | None = None,
        cancel: threading.Event | None = None,
        on_exit: ExitCallback | None = None,
        on_start: ExitCallback | None = None,
    ) -> ExecResult:
        """Run the task's container to its end, our deadline, or a cancel; then commit
        what the agent left in the worktree."""
        spec = sandbox.spec
        self._worktrees.to_base(sandbox)
        container = self._create(sandbox)
        sandbox.state["container"] = container.id

        exited = threading.Event()
        outcome: dict[str, Any] = {}

        def waiter() -> None:
            # timeout=None: block as long as the container runs; our deadline is below.
            try:
                outcome["wait"] = container.wait(timeout=None)
            except Exception as exc:
                outcome["error"] = exc
            exited.set()

        # Attach before start, not `logs(follow=True)` after: the log follower can stop
        # at the exit before the engine has written a final line without a newline
        # (seen with dockerd 20.10 about one run in four); the attach stream is the
        # container's own stdio and ends only after its last byte.
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        try:
            container.start()
        except Exception as exc:
            raise DockerBackendError("start", spec.task_id, str(exc)) from exc
        started = time.monotonic()
        if on_start is not None:
            on_start()
        logs = _LogPump(stream, on_line, self.config.log_tail_lines,
                        sandbox.spec.masker() or None)
        threading.Thread(target=waiter, name="forkyard-docker-wait", daemon=True).start()

        timeout_s = spec.limits.timeout_s
        deadline = started + timeout_s if timeout_s is not None else None
        killed_for: Status | None = None
        while not exited.is_set():
            if cancel is not None and cancel.is_set():
                killed_for = "cancelled"
            elif deadline is not None and time.monotonic() >= deadline:
                killed_for = "timed_out"
            if killed_for is not None:
                self._kill(container)
                break
            wake = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            exited.wait(wake)
        if not exited.wait(self.config.stop_timeout_s):
            raise DockerBackendError("wait", spec.task_id,
                                     f"no exit reported {self.config.stop_timeout_s:g}s after kill")
        duration = time.monotonic() - started
        logs.join(timeout=5.0)
        if "error" in outcome:
            raise DockerBackendError("wait", spec.task_id, str(outcome["error"]))

        container.reload()
        state = container.attrs.get("State", {})
        exit_code = int(state.get("ExitCode", outcome["wait"].get("StatusCode", -1)))
        oom = bool(state.get("OOMKilled")) and exit_code == EXIT_SIGKILL
        status, message = self._classify(spec, killed_for, exit_code, oom,
                                         bool(state.get("OOMKilled")))

        if on_exit is not None:
            on_exit()
        commit, files, note = self._commit(sandbox) if spec.harvest else (None, [], "")
        if note:
            message = f"{message}; {note}"
        return ExecResult(
            status=status,
            exit_code=exit_code,
            duration_s=round(duration, 3),
            log_tail=logs.tail(),
            commit=commit,
            files_modified=tuple(files),
            enforced_by="docker",
            confinement="docker",
            message=message,
        )

    def cleanup(self, sandbox: Sandbox, keep: bool = False) -> None:
        """Remove the container (always), then the worktree unless ``keep``."""
        import docker

        try:
            container_id = sandbox.state.pop("container", None)
            if isinstance(container_id, str):
                try:
                    # force: a container still running (an interrupted execute) goes too.
                    self.client.api.remove_container(container_id, force=True, v=True)
                except docker.errors.NotFound:
                    pass
        finally:
            self._worktrees.cleanup(sandbox, keep=keep)

    # -- helpers -----------------------------------------------------------------

    def _user(self, worktree: Path) -> str:
        if self.config.user:
            return self.config.user
        st = os.stat(worktree)
        return f"{st.st_uid}:{st.st_gid}"

    def _create(self, sandbox: Sandbox) -> Container:
        import docker

        spec = sandbox.spec
        image = str(sandbox.state.get("image") or self.image_for(spec))
        options = run_options(sandbox, self.repo.path, self._user(sandbox.worktree))
        try:
            return self.client.containers.create(image, **options)
        except docker.errors.ImageNotFound:
            raise ImageNotFoundError(image) from None
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise DockerBackendError("create", spec.task_id, str(exc)) from exc
        # 409: a container of that name is left over from a crashed run of the same
        # run id and task; it is ours (labels say so) and stale, so replace it.
        stale = self.client.containers.get(options["name"])
        if stale.labels.get("forkyard.run") != spec.run_id:
            raise DockerBackendError("create", spec.task_id,
                                     f"a container named {options['name']!r} exists")
        stale.remove(force=True, v=True)
        try:
            return self.client.containers.create(image, **options)
        except docker.errors.APIError as exc:
            raise DockerBackendError("create", spec.task_id, str(exc)) from exc

    def _kill(self, container: Container) -> None:
        """SIGTERM (the init passes it on), a grace period, then SIGKILL."""
        import docker

        try:
            container.kill(signal="SIGTERM")
            end = time.monotonic() + self.config.kill_grace_s
            while time.monotonic() < end:
                container.reload()
                if container.status != "running":
                    return
                time.sleep(0.05)
            container.kill(signal="SIGKILL")
        except docker.errors.APIError as exc:
            # 409 "is not running": it exited by itself meanwhile.
            if exc.status_code not in (404, 409):
                raise

    @staticmethod
    def _classify(
        spec: SandboxSpec, killed_for: Status | None, exit_code: int, oom: bool,
        oom_flag: bool,
    ) -> tuple[Status, str]:
        if killed_for == "cancelled":
            return "cancelled", "cancelled; container killed"
        if killed_for == "timed_out":
            return "timed_out", f"exceeded its {spec.limits.timeout_s:g}s timeout; container killed"
        if oom:
            return "oom_killed", f"killed by the OOM killer at its {spec.limits.memory_mb} MiB limit"
        note = ""
        if oom_flag:
            # A child was OOM-killed but the agent carried on and exited by itself.
            note = "; a process inside was OOM-killed"
        if exit_code == 0:
            return "succeeded", "exit 0" + note
        return "failed", f"exit {exit_code}" + note

    def _commit(self, sandbox: Sandbox) -> tuple[str | None, list[Any], str]:
        """Commit what the agent left (on the host, our identity): (tip, numstat, note)."""
        dotgit = sandbox.worktree / ".git"
        pinned = sandbox.state["dotgit"]
        assert isinstance(pinned, bytes)
        if dotgit.is_symlink() or not dotgit.is_file() or dotgit.read_bytes() != pinned:
            if dotgit.is_dir() and not dotgit.is_symlink():
                shutil.rmtree(dotgit)
            else:
                dotgit.unlink(missing_ok=True)
            dotgit.write_bytes(pinned)
        return collect(self.repo, sandbox, {})


def remove_containers(
    repo: Repo, run_id: str | None = None, base_url: str | None = None
) -> list[str]:
    """Force-remove forkyard's containers of ``repo`` (one run's, or all): what a crashed
    run left behind, for ``forkyard gc``.  Returns the names removed; ``[]`` when no
    engine answers (nothing can be left on an engine that is not there)."""
    import docker

    backend = DockerBackend(repo, DockerConfig(base_url=base_url))
    try:
        client = backend.client
    except BackendUnavailableError:
        return []
    labels = [f"forkyard.repo={repo.path}"]
    if run_id is not None:
        labels.append(f"forkyard.run={run_id}")
    removed = []
    for container in client.containers.list(all=True, filters={"label": labels}):
        try:
            container.remove(force=True, v=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    return removed
