"""``forkyard demo`` and its fixture repository (``webapp/``, package data)."""
