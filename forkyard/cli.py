"""The ``forkyard`` command line: argument parsing, then a call into the library.

Each command lives in ``forkyard/commands/<name>.py`` as a plain function returning an
exit code.  One handler (:func:`main`) maps errors to exit codes: an error's
``exit_code`` attribute (2 bad input, 3 internal), Ctrl-C to 130, anything else to 3
with the traceback logged, so bad input never shows a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import click
import typer

app = typer.Typer(
    name="forkyard",
    help="Run many coding agents in parallel against one git repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("forkyard")

RepoOpt = Annotated[Path, typer.Option("--repo", help="Repository (default: the current one).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]


@app.command()
def plan(
    tasks: Annotated[Path, typer.Argument(help="Task file: YAML, JSON or spec-kit tasks.md.")],
    agents: Annotated[int, typer.Option("--agents", "-n", min=1)] = 4,
    goal: Annotated[str, typer.Option(help="minimize-time|minimize-conflicts|balance-load")] = "minimize-time",
    optimal: Annotated[bool, typer.Option("--optimal", help="Use OR-Tools CP-SAT (small plans).")] = False,
    no_history: Annotated[bool, typer.Option("--no-history", help="Plan with the task file's estimates only.")] = False,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Plan a task file onto N agents and show the schedule (with durations earlier runs
    in --repo measured, as `run` plans)."""
    from forkyard.commands.plan import plan_command

    return plan_command(tasks, agents=agents, goal=goal, optimal=optimal, as_json=as_json,
                        repo=repo, use_history=not no_history)


@app.command()
def merge(
    sources: Annotated[list[str], typer.Argument(help="Branches or commits to merge, in order.")],
    into: Annotated[str, typer.Option("--into", help="Target branch (any commit-ish with --dry-run).")],
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    validate: Annotated[str | None, typer.Option("--validate", help="Command run on the merged tree.")] = None,
    no_semantic: Annotated[bool, typer.Option("--no-semantic")] = False,
    squash: Annotated[bool, typer.Option("--squash", help="One commit per source, no merge commits.")] = False,
    mode: Annotated[str, typer.Option("--mode", help="conservative|bisect")] = "conservative",
    setup: Annotated[str | None, typer.Option("--setup", help="Command run in the validation sandbox first (e.g. an install).")] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Merge SOURCES into a target as one transaction."""
    from forkyard.commands.merge import merge_command

    return merge_command(repo, into=into, sources=sources, dry_run=dry_run, validate=validate,
                         semantic=not no_semantic, squash=squash, mode=mode, as_json=as_json,
                         setup=setup)


@app.command()
def check(
    sources: Annotated[list[str], typer.Argument(help="Branches or globs to check (default: every open forkyard branch).")] = [],  # noqa: B006
    into: Annotated[str, typer.Option("--into")] = "HEAD",
    validate: Annotated[str | None, typer.Option("--validate")] = None,
    no_semantic: Annotated[bool, typer.Option("--no-semantic")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    setup: Annotated[str | None, typer.Option("--setup", help="Command run in the validation sandbox first.")] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """CI: do SOURCES integrate into a target?  Pairwise matrix, integration, validation;
    never moves a ref.  Exit 1 on any conflict or failed validation."""
    from forkyard.commands.check import check_command

    return check_command(repo, into=into, sources=sources, validate=validate,
                         semantic=not no_semantic, as_json=as_json, junit=junit, setup=setup)


@app.command()
def run(
    tasks: Annotated[Path | None, typer.Argument(help="Task file.")] = None,
    agents: Annotated[int, typer.Option("--agents", "-n", min=1)] = 4,
    backend: Annotated[str, typer.Option(help="worktree|docker")] = "worktree",
    strategy: Annotated[str, typer.Option(help="aggressive (keep independent work going) | conservative (stop at the first failure)")] = "aggressive",
    mode: Annotated[str, typer.Option(help="stream|waves")] = "stream",
    goal: Annotated[str, typer.Option(help="minimize-time|minimize-conflicts|balance-load")] = "minimize-time",
    into: Annotated[str | None, typer.Option("--into", help="Target branch (default: current).")] = None,
    validate: Annotated[str | None, typer.Option("--validate")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Docker image for --backend docker.")] = None,
    executor: Annotated[str, typer.Option(help="local|ray: where sandboxes are made (ray: on a Ray cluster's workers).")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster for --executor ray (default: a local Ray for this run).")] = None,
    ray_resource: Annotated[list[str] | None, typer.Option("--ray-resource", help="NAME=AMOUNT: a Ray resource every task asks for (repeatable).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep worktrees after the run.")] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a stopped run.")] = None,
    no_confine: Annotated[bool, typer.Option("--no-confine", help="Run agents unconfined (opt-out).")] = False,
    agent: Annotated[str | None, typer.Option("--agent", help="Default agent: a preset (claude, codex, aider, gemini, shell) or a command template.")] = None,
    sandbox_dir: Annotated[Path | None, typer.Option("--sandbox-dir", help="Where sandboxes go (default: $XDG_CACHE_HOME/forkyard/sandboxes); never inside .git.")] = None,
    extra_rw: Annotated[list[Path] | None, typer.Option("--extra-rw", help="A host path every agent may write (repeatable).")] = None,
    extra_ro: Annotated[list[Path] | None, typer.Option("--extra-ro", help="A host path every agent may read where the sandbox hides it, e.g. under /tmp (repeatable).")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name the new run (must be unused).")] = None,
    max_file_mb: Annotated[float | None, typer.Option("--max-file-mb", help="Hold back a task adding a file larger than this (MiB; default 100).")] = None,
    max_delete_share: Annotated[float | None, typer.Option("--max-delete-share", help="Hold back a task deleting more than this share of the files (default 0.5).")] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Plan and run a task file with parallel agents, integrating their work."""
    from forkyard.commands.run import run_command
    from forkyard.run.options import RunOptions

    backend_options: dict[str, Any] = {}
    for key, value in (("sandbox_dir", sandbox_dir), ("extra_rw", extra_rw),
                       ("extra_ro", extra_ro)):
        if value:  # absolute now: the options outlive this directory (--resume)
            backend_options[key] = ([str(p.expanduser().absolute()) for p in value]
                                    if isinstance(value, list) else str(value.expanduser().absolute()))
    options = bad_input_from(RunOptions, agents=agents, backend=backend, strategy=strategy,
                             mode=mode, goal=goal, into=into, validate_command=validate,
                             image=image, keep=keep, confine=not no_confine, agent=agent,
                             backend_options=backend_options,
                             executor=executor, ray_address=ray_address,
                             ray_resources=_resources(ray_resource or []),
                             **{k: v for k, v in (("max_file_mb", max_file_mb),
                                                  ("max_delete_share", max_delete_share))
                                if v is not None})
    return run_command(repo, tasks, options, resume=resume, as_json=as_json, run_id=run_id)


def _resources(items: list[str]) -> dict[str, float]:
    """``--ray-resource NAME=AMOUNT`` options as a dict (a malformed one is bad input)."""
    from gitproc.errors import BadInputError

    out: dict[str, float] = {}
    for item in items:
        name, sep, amount = item.partition("=")
        try:
            out[name.strip()] = float(amount) if sep else 1.0
        except ValueError:
            raise BadInputError(f"--ray-resource {item!r}: use NAME=AMOUNT") from None
        if not name.strip() or out[name.strip()] <= 0:
            raise BadInputError(f"--ray-resource {item!r}: use NAME=AMOUNT (AMOUNT > 0)")
    return out


@app.command()
def agents(
    as_json: JsonOpt = False,
) -> int:
    """Each agent preset: is its CLI installed (where, which version), are its key and
    endpoint set, and the flags and domains forkyard uses for it."""
    from forkyard.commands.agents import agents_command

    return agents_command(as_json=as_json)


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN")] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Show a run's progress (the latest run by default)."""
    from forkyard.commands.status import status_command

    return status_command(repo, run_id, as_json=as_json)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Write a self-contained HTML report of a run."""
    from forkyard.commands.report import report_command

    return report_command(repo, run_id, output=output, as_json=as_json)


@app.command()
def history(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Estimated versus actual durations per task, with regressions flagged."""
    from forkyard.commands.history import history_command

    return history_command(repo, as_json=as_json)


@app.command()
def gc(
    prune_unmerged: Annotated[bool, typer.Option(
        "--prune-unmerged", help="Also delete unmerged branches of dead runs (shas are printed).")] = False,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Remove what crashed runs left: stale worktrees, merged branches, cgroups, containers."""
    from forkyard.commands.gc import gc_command

    return gc_command(repo, as_json=as_json, prune_unmerged=prune_unmerged)


@app.command()
def recover(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> int:
    """Finish or roll back a batch a crash interrupted."""
    from forkyard.commands.merge import recover_command

    return recover_command(repo, as_json=as_json)


@app.command()
def mcp(repo: RepoOpt = Path(".")) -> int:
    """Serve forkyard's tools over MCP (stdio)."""
    from forkyard.mcp.server import serve

    return serve(repo)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo repository.")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Run six scripted agents on the webapp fixture."""
    from forkyard.commands.demo import demo_command

    return demo_command(keep=keep, as_json=as_json)


def bad_input_from(model: Any, **values: Any) -> Any:
    """``model(**values)``, its validation errors turned into one line of bad input."""
    from pydantic import ValidationError

    from gitproc.errors import BadInputError

    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        flag = {"validate_command": "validate"}.get(where, where).replace("_", "-")
        raise BadInputError(f"--{flag}: {first['msg']}") from None


def _error_json(exc: BaseException) -> dict[str, Any]:
    doc: dict[str, Any] = {"error": str(exc)}
    for field in ("cycles", "task", "dependency", "ref", "image", "path"):
        value = getattr(exc, field, None)
        if isinstance(value, str | list | int):
            doc[field] = value
    return doc


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and translate errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="forkyard: %(message)s")
    try:
        rv = app(args=args, prog_name="forkyard", standalone_mode=False)
    # Recent typer releases vendor their own click: catch both families.
    except (click.exceptions.Exit, typer.Exit) as exc:
        return int(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        return 130
    except (click.ClickException, typer.TyperException) as exc:
        exc.show()  # type: ignore[union-attr]  # usage errors: "Usage: ...", then the reason
        return 2
    except KeyboardInterrupt:
        print("forkyard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place errors become exit codes
        code = int(getattr(exc, "exit_code", 3))
        if code == 3:
            traceback.print_exc(file=sys.stderr)
            print(f"forkyard: internal error: {exc}", file=sys.stderr)
        else:
            print(f"forkyard: error: {exc}", file=sys.stderr)
        if "--json" in args:
            print(json.dumps(_error_json(exc)))
        return code
    return int(rv or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
