"""board: a wanted board kept as JSON files in a git repository, replicated by push/pull."""
