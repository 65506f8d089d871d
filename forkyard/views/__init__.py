"""What a person or a tool sees of runs: status, the HTML report, duration history and
the live display."""
