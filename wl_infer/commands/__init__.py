"""The command line of wl_infer: the only modules that import click, rich or board.cli."""
