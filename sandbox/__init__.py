"""WHERE and HOW agents run: worktrees, containers, limits, confinement, the run loop."""
