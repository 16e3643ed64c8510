"""The `wl` command line: a thin layer that parses, calls one board function, and prints."""
