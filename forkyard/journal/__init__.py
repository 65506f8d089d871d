"""A run's journal: its events (``events.jsonl``), the state replayed from them, the
manifest of what was asked, and the result and metrics built from both."""
