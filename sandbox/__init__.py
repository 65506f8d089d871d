"""WHERE and HOW one agent runs: the sandbox engine.

Backends (``sandbox.backends``: the worktree package, docker, dummy) make a sandbox for a
task and run its agent in it, under enforced limits (``limits``, ``cgroups``), confined
(``confine``, ``shim``: bubblewrap and Landlock), over a shared base checkout
(``overlay``), with a leased port (``ports``) and per-sandbox set-up (``setup``).  The
application (``forkyard``) decides which tasks run when; this package only runs them.
"""
