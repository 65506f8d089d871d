"""WHAT runs WHEN: task files, the dependency graph, schedules and progress.  Pure."""
