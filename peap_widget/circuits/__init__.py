"""Layer 3, circuits: what a circuit is (`circuit`: a mask over an `EdgeSpace`, with editing
and undo; `units`: what a size counts as one edge), how one is searched (`search`, with the
lazy `greedy` order), its file formats (`formats`), and the score table every method returns
(`result.AttributionResult`, its files in `result_files`). Pure NumPy over the graph: it runs no
model, so the engine below the user-facing methods can return its objects."""
