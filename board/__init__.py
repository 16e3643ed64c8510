"""board: a wanted board kept as JSON files in a git repository, replicated by push/pull.

Plugins (wl_infer, and any other) use `board.api` only: it declares the supported surface (Board, records,
errors, id and time helpers, lease rules, blob paths, a rig's known addresses, signing primitives); the other
modules here are internal and change without notice. `board.cli` is the `wl` command line.
"""
