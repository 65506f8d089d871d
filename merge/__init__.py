"""HOW results come back: in-memory three-way merges, conflicts, semantic checks,
validation and transactional batches."""
