# Lab 6 source (see notebooks/build_labs.py for the markers).
# lab: requires_widgets=FaithfulnessCurves

# %% [markdown]
# # Lab 6: Beyond EAP
#
# **Goals.** By the end of this lab you can
#
# 1. say when EAP's first-order scores fail (a gradient that vanishes at the clean point) and how **EAP-IG** (integrated gradients along a path) repairs some of it, and measure both against **exact patching** with a rank correlation;
# 2. run **ACDC** and compare the size of its circuit with greedy PEAP's at the same faithfulness;
# 3. measure **minimality** and **completeness** of a circuit with `pw.minimality` and `pw.completeness`;
# 4. grade attribution methods against a model whose circuit is known, with **ROC curves** and AUROC.
#
# **Time:** about 50 minutes; about two minutes of compute (ACDC is the slow cell). Cells with `...` are yours; run the check below each.
#
# Every method here returns the same edge table (`res.edges`) and is evaluated by the same
# `pw.Evaluator`, so the numbers compare directly. See `docs/methods.md` for the definitions.

# %%
import numpy as np
import pandas as pd

import peap_widget as pw
import peap_widget.lab
from peap_widget.models import groundtruth

checks = pw.lab.lab6
model = pw.models.load("toy-ioi")
ds = pw.tasks.get("ioi", n=24, order="both", seed=0).dataset(model)
ev = pw.Evaluator(model, ds)            # cached clean and counterfactual runs, reused below
print(f"{len(ds)} prompts; clean logit difference {ev.clean_metric:.2f}, "
      f"counterfactual {ev.empty_metric:.2f}")

# %% [markdown]
# ## Part 1: when the gradient vanishes
#
# EAP scores an edge u -> v by a first-order Taylor step: (z*_u - z_u) . dm/d(v's input), with the
# gradient taken **at the clean run**. If v is saturated there (a GELU far in its flat part, a
# softmax that puts all its attention on one token), the gradient is close to 0 although moving
# all the way to the counterfactual changes a lot. **EAP-IG** (Hanna et al. 2024) averages the
# gradient over `steps` points on the straight line from the counterfactual input to the clean one,
# so it sees the slope along the whole way. `steps=1` is EAP exactly.
#
# **Exact patching** (`pw.exact_scores`) is the truth both estimate: for every edge, the metric
# change when only that edge is patched. It costs one patched forward pass per edge, fine on
# this 4-layer model with the EAP graph (one span, 479 edges).

# %%
eap = pw.attribute(model, ds, method="eap", progress=False)
eap_ig = pw.attribute(model, ds, method="eap-ig", steps=5, progress=False)
exact = pw.exact_scores(model, ds, positional=False, evaluator=ev, progress=False)
table = eap.edges[["src", "dst"]].assign(eap=eap.scores, eap_ig=eap_ig.scores, exact=exact.scores)
table.loc[table.exact.abs().sort_values(ascending=False).index].head(8).round(2)

# %% [markdown]
# Look for edges with a large exact effect whose EAP score is near zero. The embedding's edge
# into the first MLP, `input -> m0`, is the clearest: patching it moves the logit difference by
# about -10, yet EAP scores it near 0 with the wrong sign. MLP0 is saturated at the clean input.
# The path-averaged gradient of EAP-IG finds a large part of the effect, with the right sign;
# more steps follow the path more closely.

# %%
eap_ig10 = pw.attribute(model, ds, method="eap-ig", steps=10, progress=False)
row = table.index[(table.src == "input") & (table.dst == "m0")]
table.loc[row].assign(eap_ig_10_steps=eap_ig10.scores[row]).round(2)

# %% [markdown]
# ## Exercise 6.1: rank correlation with exact patching
#
# One edge is an anecdote. How well does each method *rank* all 479 edges? Compute the
# **Spearman** correlation (the Pearson correlation of the ranks; ties get their average rank:
# `pd.Series(x).rank()` does that) of the signed EAP scores and of the signed EAP-IG scores with
# the exact scores. Answer with a dict `{"eap": ..., "eap-ig": ...}`.

# %%
def spearman(a, b):
    return np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1]  # SOLUTION
    # EXERCISE: ...  # YOUR CODE

rho = {"eap": spearman(eap.scores, exact.scores), "eap-ig": spearman(eap_ig.scores, exact.scores)}  # SOLUTION
# EXERCISE: rho = {"eap": ..., "eap-ig": ...}  # YOUR CODE
rho

# %%
checks.rank_correlation(rho, results={"eap": eap, "eap-ig": eap_ig}, exact=exact, model=model, ds=ds)

# %% [markdown]
# EAP-IG repairs the saturated edges, but over all edges the two rank about equally well here:
# integrated gradients trade one error (the clean point's slope) for another (a straight line in
# embedding space that passes through inputs the model never sees). Exact patching is the only
# ground truth on a real model, and it is affordable only for small ones.
#
# ## Part 2: ACDC against greedy PEAP
#
# **ACDC** (Conmy et al. 2023) is exact patching used as a search: it starts from the full
# circuit, visits receivers from the logits backwards, and removes an edge for good when
# removing it changes the metric by less than `tau`. Every decision is a real forward pass, so it
# is slow, but its circuits are small. Greedy PEAP (labs 4 and 5) ranks edges once by their
# first-order scores. Here ACDC runs on the positional graph (the same graph as PEAP, 6,471 rows)
# with the logit difference as its criterion. This cell takes about a minute.

# %%
acdc_circuit = pw.acdc(model, ds, tau=0.5, metric="logit_diff", evaluator=ev, progress=False)
f_acdc = ev.run(acdc_circuit).faithfulness
print(f"ACDC: {len(acdc_circuit.edges)} edges, faithfulness {f_acdc:.3f}, "
      f"{acdc_circuit.settings['passes']} forward passes, {acdc_circuit.settings['seconds']:.0f} s")

# %% [markdown]
# ## Exercise 6.2: how many edges does each method need?
#
# Count the ACDC circuit's edges (rows of its edge table, q/k/v apart). Then find the smallest
# greedy PEAP circuit that is at least as faithful: try `peap.circuit(n_edges=n, merge_qkv=False)`
# for n = 50, 100, 150, ... and take the first whose faithfulness (`ev.run(c).faithfulness`) reaches
# `f_acdc`. Count its edges the same way (search drops edges with no path to the logits, so
# there are fewer than n). Answer with `{"acdc": ..., "peap": ...}`.

# %%
peap = pw.attribute(model, ds, method="peap", progress=False)
n_acdc = len(acdc_circuit.edges)  # SOLUTION
for n in range(50, 1001, 50):  # SOLUTION
    greedy = peap.circuit(n_edges=n, merge_qkv=False)  # SOLUTION
    if ev.run(greedy).faithfulness >= f_acdc:  # SOLUTION
        break  # SOLUTION
n_peap = len(greedy.edges)  # SOLUTION
# EXERCISE: n_acdc = ...  # YOUR CODE
# EXERCISE: n_peap = ...  # YOUR CODE
sizes = {"acdc": n_acdc, "peap": n_peap}
sizes

# %%
checks.circuit_sizes(sizes, acdc_circuit=acdc_circuit, attribution=peap, model=model, ds=ds)

# %% [markdown]
# ## Part 3: minimality and completeness
#
# Lab 5 measured both by hand on the hand-built model. The library has them for any circuit, all
# through one evaluator (`docs/methods.md`, "Circuit quality"), on the task metric m:
#
# * `pw.minimality(ev, circuit)`: every edge's own contribution m(C) - m(C minus the edge); an
#   edge is flagged `below` when its |contribution| is under 1% of the model's effect
#   |m(full) - m(empty)|.
# * `pw.completeness(ev, circuit, n_samples=10, seed=0)`: for random sets K of the circuit's
#   nodes, the gap |m(C minus K) - m(full model minus K)|; `.worst_gap` is the largest.
#
# Start from a small greedy PEAP circuit (40 edges, q/k/v of a head and span pair counted as one).

# %%
start = peap.circuit(n_edges=40)
print(f"{start.n_edges} edges, faithfulness {ev.run(start).faithfulness:.3f}")

# %% [markdown]
# ## Exercise 6.3: which edges do (almost) nothing?
#
# Run `pw.minimality` on `start`. How many edges are flagged `below`, and what is the smallest
# |contribution|? Answer `{"n_below": ..., "weakest": ...}`.

# %%
mini = pw.minimality(ev, start, progress=False)  # SOLUTION
answer_min = {"n_below": int(mini.below.sum()), "weakest": float(mini.contribution.abs().min())}  # SOLUTION
# EXERCISE: mini = ...  # YOUR CODE
# EXERCISE: answer_min = {"n_below": ..., "weakest": ...}  # YOUR CODE
answer_min

# %%
checks.minimality(answer_min, circuit=start, model=model, ds=ds)

# %% [markdown]
# ## Exercise 6.4: is the pruned circuit complete?
#
# Prune the flagged edges (each row of `mini` lists its edge-table `rows`; set them to False in a
# copy's `in_rows`), then compute the worst completeness gap of your pruned circuit with
# `pw.completeness(ev, pruned, n_samples=10, seed=0)`.

# %%
pruned = start.copy()
for rows in mini.loc[mini.below, "rows"]:  # SOLUTION
    pruned.in_rows[rows] = False  # SOLUTION
comp = pw.completeness(ev, pruned, n_samples=10, seed=0, progress=False)  # SOLUTION
worst_gap = comp.worst_gap  # SOLUTION
# EXERCISE: ...  # YOUR CODE: prune the rows flagged below
# EXERCISE: worst_gap = ...  # YOUR CODE
print(f"pruned: {pruned.n_edges} edges, faithfulness {ev.run(pruned).faithfulness:.3f}; worst gap:", worst_gap)

# %%
checks.completeness(worst_gap, circuit=pruned, model=model, ds=ds, n_samples=10, seed=0)

# %% [markdown]
# Pruned to its useful edges, yet far from complete: the worst gap is a large part of the full
# model's logit difference. Knock out a few heads and the full model falls back on parts the
# circuit does not hold (backup heads, other paths), so the two react very differently. A small
# circuit is one explanation of the behaviour, not all of the model's.
#
# ## Part 4: ROC against a known circuit
#
# On a trained model nobody knows the true circuit. The hand-built `induction-groundtruth`
# model (lab 5) has one: `groundtruth.TRUE_EDGES`, 9 edges of the positional graph. A **ROC
# curve** ranks all edges by |score| and plots the fraction of true edges found (true positive
# rate) against the fraction of other edges taken along (false positive rate); the area under it
# (**AUROC**) is the chance that a random true edge outranks a random other edge.

# %%
gt_model = pw.models.load("induction-groundtruth")
gt_ds = pw.Dataset.from_records(groundtruth.make_records(24), gt_model)
gt_results = {"PEAP": pw.attribute(gt_model, gt_ds, method="peap", progress=False),
              "PEAP-IG": pw.attribute(gt_model, gt_ds, method="peap-ig", steps=5, progress=False),
              "exact": pw.exact_scores(gt_model, gt_ds, positional=True, progress=False)}
truth = groundtruth.true_edge_mask(gt_results["PEAP"].edges)
print(f"{truth.sum()} true edges of {len(truth)}")

# %%
pw.FaithfulnessCurves.roc(gt_results, truth)

# %% [markdown]
# ## Exercise 6.5: AUROC
#
# Compute the AUROC of each of the three rankings against the true edges (`pw.roc_curve(result,
# truth).auroc`). Answer with a dict with the keys of `gt_results`.

# %%
aurocs = {name: pw.roc_curve(res, truth).auroc for name, res in gt_results.items()}  # SOLUTION
# EXERCISE: aurocs = {"PEAP": ..., "PEAP-IG": ..., "exact": ...}  # YOUR CODE
aurocs

# %%
checks.auroc(aurocs, results=gt_results, truth_edges=groundtruth.TRUE_EDGES)

# %% [markdown]
# Every method separates the true edges perfectly here, though the scores differ: compare the
# query and key paths' edges (e.g. `input -> a0.h0<v>@A1`, `a0.h0 -> a1.h0<k>@B`) across methods
# below. PEAP gets about half of their exact effect and PEAP-IG less: the induction head's
# attention switches sharply when query and key match, far from linear, and the straight path
# between the clean and counterfactual embeddings does not follow it. A ranking can be perfect
# while its numbers are off.
#
# The truth itself depends on the ablation: `groundtruth.POSITIONAL_EDGES` are used by the
# mechanism (the previous-token head finds its token by position) but are identical in the clean
# and counterfactual runs, so no counterfactual score can find them.

# %%
keys = ["kind", "src", "dst", "src_span", "dst_span"]
scores = gt_results["PEAP"].edges[keys].assign(**{n: r.scores for n, r in gt_results.items()})
print(scores[truth].round(2).to_string(index=False))
mechanism = groundtruth.true_edge_mask(gt_results["PEAP"].edges,
                                       groundtruth.TRUE_EDGES + groundtruth.POSITIONAL_EDGES)
{name: round(pw.roc_curve(res, mechanism).auroc, 3) for name, res in gt_results.items()}

# %% [markdown]
# ## Summary
#
# * EAP's gradient is taken at the clean point: where a component saturates, it misses large
#   effects. EAP-IG averages gradients along a path and recovers some of them, but it is no
#   better at ranking every edge; exact patching is the reference on small models.
# * ACDC tests every removal with a forward pass: much smaller circuits than greedy PEAP at the
#   same faithfulness, at many times the cost.
# * Faithful is not complete: `pw.minimality` finds edges to prune, `pw.completeness` shows what
#   the model uses that the circuit leaves out.
# * Against a known circuit, ROC curves and AUROC grade a ranking; the truth depends on the
#   ablation, and a perfect ranking can still have wrong magnitudes.

# %%
pw.lab.summary("lab6")
