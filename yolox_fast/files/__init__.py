"""Writing outputs safely: atomic file writes (and, through the commands, run folders)."""
