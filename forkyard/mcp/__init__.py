"""forkyard over the Model Context Protocol, for orchestrating agents."""
