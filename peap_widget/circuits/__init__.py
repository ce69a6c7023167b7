"""Layer 3, circuits: what a circuit is (`circuit`: a mask over an `EdgeSpace`, with editing
and undo), how one is searched (`greedy`, `search`), and the score table every method returns
(`result.AttributionResult`, its files). Pure NumPy over the graph: it runs no model, so the
engine below the user-facing methods can return its objects."""
