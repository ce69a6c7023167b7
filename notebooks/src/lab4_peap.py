# Lab 4 source (see notebooks/build_labs.py for the markers).
# lab: requires_widgets=FaithfulnessCurves

# %% [markdown]
# # Lab 4: Position-aware edge attribution patching (PEAP)
#
# **Goals.** By the end of this lab you can
#
# 1. read PEAP's two kinds of edges: **positional** residual edges (an edge at one span) and **crossing** attention edges (a head at one span reading another span through its query, key or value);
# 2. relate PEAP to EAP: summing a residual edge over spans gives its EAP score;
# 3. compare PEAP and EAP circuits fairly with faithfulness curves on the same data, counting *real* per-example edges;
# 4. find the heads that move the name to the output, and the span they read it from.
#
# **Time:** about 45 minutes; under a minute of compute. Cells with `...` are yours; run the check below each.

# %%
import matplotlib.pyplot as plt
import numpy as np

import peap_widget as pw
import peap_widget.lab

checks = pw.lab.lab4
model = pw.models.load("toy-ioi", dtype="float64")
task = pw.tasks.get("ioi", n=32, order="ABBA", seed=1)
ds = task.dataset(model)
print(ds.schema)
print(ds.tokens(0))
print(ds.examples[0].span_dict(ds.schema))

# %% [markdown]
# ## Spans instead of positions
#
# Prompts have different lengths, so "position 5" means different things in different prompts.
# A **span schema** (lab 3) names the parts every prompt has: here `prefix, IO, and, S1, S1+1,
# action1, S2, action2, to`. PEAP scores every edge *per span*: the score of an edge at span s
# adds up the per-token scores of the tokens in s (and averages over examples).
#
# **Crossing edges.** Attention moves information *between* positions. Head h at a query span
# s_q reads key span s_k (never later than s_q) in three ways, each its own edge:
#
# * `v`: the values at s_k (what is copied), `k`: the keys at s_k (where it looks), `q`: its own query at s_q (what it looks for), restricted to keys in s_k.
#
# Edge names: residual `m0->a3.h2<k>@S1` (at span S1), crossing `a3.h2<v>@IO->a3.h2@to` (head
# a3.h2 at `to` reading the values at `IO`) and `a3.h2<q>@to->a3.h2@to[IO]` (its query at `to`,
# for the keys in `IO`).

# %%
peap = pw.attribute(model, ds, method="peap", progress=False)
eap = pw.attribute(model, ds, method="eap", progress=False)
print(peap)
print(eap)
peap.top(8).assign(name=lambda t: [peap.space.edge_name(i) for i in t.index])

# %% [markdown]
# ## Exercise 4.1: how many crossing edges?
#
# The toy model has 4 layers of 4 heads and the schema has 9 spans. Every head has a q, a k and
# a v edge for every (key span, query span) pair with the key span not after the query span.
# How many crossing edges are there?

# %%
S = len(ds.schema)
n_crossing = 3 * 4 * 4 * (S * (S + 1) // 2)  # SOLUTION
# EXERCISE: n_crossing = ...  # YOUR CODE
n_crossing

# %%
checks.n_crossing_edges(n_crossing, model=model, ds=ds)
print("in the edge table:", (peap.edges.kind != "resid").sum(), "crossing rows,",
      (peap.edges.kind == "resid").sum(), "residual rows (479 edges x 9 spans)")

# %% [markdown]
# ## Exercise 4.2: EAP is PEAP with the positions summed away
#
# Take the residual edge `m0 -> a3.h2<k>` (the first MLP feeding the keys of head a3.h2). Select
# its `resid` rows in `peap.edges` (one per span) and add their scores. Compare with its EAP score.

# %%
e = peap.edges
rows = e[(e.kind == "resid") & (e.src == "m0") & (e.dst == "a3.h2<k>")]
summed = rows.score.sum()  # SOLUTION
# EXERCISE: summed = ...  # YOUR CODE: the sum of the scores of `rows`
summed, eap.edges.score[eap.space.row("m0->a3.h2<k>@all")]

# %%
checks.eap_is_sum(summed, model=model, ds=ds, edge="m0->a3.h2<k>")
rows[["src_span", "score"]].set_index("src_span").T.round(3)

# %% [markdown]
# EAP sees one number; PEAP shows *where* it comes from: the keys of a3.h2 at the name spans.
#
# ## Faithfulness curves: PEAP against EAP
#
# We find circuits of several sizes from each result (greedy search from the logits, lab 5) and
# evaluate each one by patching (lab 1). Sizes are fractions of each graph's edges.
#
# Careful with the x axis: a PEAP edge lives at one span, an EAP edge at *every* token. Counting
# **real per-example edges** (an edge at a span of 3 tokens counts 3; a crossing edge counts its
# (query, key) token pairs) compares the two fairly.

# %%
sizes = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
curve = pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap}, sizes=sizes, progress=False)
curve.table[["result", "n_edges", "fraction", "n_real_edges", "faithfulness"]].round(3)

# %% [markdown]
# The same curves in the interactive widget (hover for each circuit's size and faithfulness), and
# as a matplotlib figure: by fraction of each graph's edges (left) and by real per-example edges (right).

# %%
pw.FaithfulnessCurves(curve)

# %%
fig = curve.overview()
fig

# %% [markdown]
# ## Exercise 4.3: how many real edges for half the behaviour?
#
# For each method, how many real per-example edges does the smallest circuit on the curve need
# to reach faithfulness 0.5? `curve.point(0.5, "PEAP")` returns that circuit's row of
# `curve.table`. Answer with a dict `{"PEAP": ..., "EAP": ...}`.

# %%
needed = {name: curve.point(0.5, name)["n_real_edges"] for name in ["PEAP", "EAP"]}  # SOLUTION
# EXERCISE: needed = ...  # YOUR CODE
needed

# %%
checks.real_edges_needed(needed, curve=curve, level=0.5)

# %% [markdown]
# ## Exercise 4.4: which method gives the smaller circuit?
#
# Answer `"PEAP"` or `"EAP"`.

# %%
smaller = "PEAP"  # SOLUTION
# EXERCISE: smaller = ...  # YOUR CODE

# %%
checks.fewer_real_edges(smaller, curve=curve, level=0.5)

# %% [markdown]
# ## The heads that move the name
#
# In IOI circuits of real models (Wang et al. 2022), *name mover* heads at the last token attend
# to the indirect object and copy its name into the output. Does the toy model have them?
#
# ## Exercise 4.5: name movers
#
# Among the residual edges from an attention head into `logits` at the last span `to`, find
# the two heads whose edges have the largest |score|. Answer with a list of two head names.

# %%
into = e[(e.kind == "resid") & (e.dst == "logits") & (e.dst_span == "to") & e.src.str.startswith("a")]  # SOLUTION
movers = list(into.reindex(into.score.abs().sort_values(ascending=False).index).src[:2])  # SOLUTION
# EXERCISE: movers = ...  # YOUR CODE: e.g. ["a1.h0", "a2.h3"]
movers

# %%
checks.name_movers(movers, model=model, ds=ds, k=2)

# %% [markdown]
# ## Exercise 4.6: where do they read?
#
# For each name mover, look at its **v** crossing edges into the last span `to` (kind `"v"`, `src`
# the head, `dst_span == "to"`): the key span of the one with the largest |score| is where the
# head reads what it copies. Answer with a dict `{head: span}`.

# %%
reads = {}  # SOLUTION
for h in movers:  # SOLUTION
    v = e[(e.kind == "v") & (e.src == h) & (e.dst_span == "to")]  # SOLUTION
    reads[h] = v.loc[v.score.abs().idxmax(), "src_span"]  # SOLUTION
# EXERCISE: reads = ...  # YOUR CODE: {head: key span}
reads

# %%
checks.read_spans(reads, model=model, ds=ds, k=2)

# %% [markdown]
# The check compared your answer with the heads' attention patterns. Here they are, averaged
# over examples by span, at the last token. (Plain EAP has one number per edge for all positions:
# it cannot say where a head reads.)

# %%
ref = pw.lab.reference.Reference(model)
spans = list(ds.schema.spans)
fig, axes = plt.subplots(1, 2, figsize=(11, 2.8), sharey=True)
for ax, (layer, head) in zip(axes, [(3, 2), (3, 3)]):
    att = np.zeros(len(spans))
    for ex in ds.examples:
        A = ref.attention(ex.clean_ids, layer, head)[-1]
        att += [A[s:t].sum() for s, t in ex.spans]
    ax.bar(spans, att / len(ds))
    ax.set_title(f"a{layer}.h{head}: attention from the last token, by span", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
axes[0].set_ylabel("mean attention")
plt.show()

# %% [markdown]
# ## Summary
#
# * PEAP splits every residual edge by span and adds crossing edges for attention between spans;
#   summing over spans gives back EAP.
# * On the same data and the same number of real per-example edges, the positional circuits keep
#   much more of the behaviour: EAP must keep an edge at every token to keep it anywhere.
# * The positional graph tells you *where*: the name movers sit at `to` and read the values at `IO`.

# %%
pw.lab.summary("lab4")
