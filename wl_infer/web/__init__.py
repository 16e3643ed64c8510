"""`wl serve`: the board, its results and its workers in a browser (optional extra: `wl-infer[web]`).

Layers: `data` is the only module that reads the board (one adapter, so the board's internals can move
without touching the rest); `index` derives per-head summaries from those records; `charts` lays out SVG;
`app` serves HTML pages, a JSON API and Server-Sent Events; `cli` registers the command and starts uvicorn.
"""
