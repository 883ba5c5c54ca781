"""Build: the compiled model and the firmware sources become an ELF for a board, with its memory report."""
