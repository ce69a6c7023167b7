# Lab 5 source (see notebooks/build_labs.py for the markers).
# lab: requires_widgets=CircuitExplorer

# %% [markdown]
# # Lab 5: Prune it yourself
#
# **Goals.** By the end of this lab you can
#
# 1. start from a circuit found by search and prune it by hand in the `CircuitExplorer`, watching faithfulness after every edit;
# 2. measure a discovered circuit against a **known** one (precision and recall);
# 3. tell apart three properties of a circuit: **faithful** (it reproduces the behaviour), **minimal** (every edge is needed), **complete** (it holds everything the model uses);
# 4. see why faithfulness alone is not enough.
#
# **Time:** about 60 minutes; about a minute of compute. Cells with `...` are yours; run the check below each.
#
# **About the widget.** The explorer draws the circuit: spans left to right, layers bottom to top.
# Click an edge or a node to prune it, use the size slider, undo, and watch the faithfulness
# readout. Everything you click has a Python equivalent (`explorer.remove_node("a0.h2@IO")`,
# `explorer.remove_edge(...)`, `explorer.set_size(...)`, `explorer.undo()`), and the checks read
# the explorer's state from Python (`explorer.circuit`, `explorer.evaluation`). The solutions
# use those calls where a student would click.

# %%
import numpy as np

import peap_widget as pw
import peap_widget.lab
from peap_widget.models import groundtruth

checks = pw.lab.lab5
model = pw.models.load("toy-ioi", dtype="float64")
ds = pw.tasks.get("ioi", n=32, order="ABBA", seed=1).dataset(model)
peap = pw.attribute(model, ds, method="peap", progress=False)
peap

# %% [markdown]
# ## Part 1: a discovered circuit on toy-ioi
#
# Greedy search (PEAP App. C) grows a circuit from the logits at the last span: it keeps adding
# the highest-|score| edge whose child is already in the circuit. The explorer starts from the
# greedy circuit of 600 edges (q/k/v crossing edges of one head and span pair count as one edge).

# %%
explorer = pw.CircuitExplorer(peap, model, ds, n_edges=600)
explorer

# %%
start = dict(explorer.evaluation)
print(f"start: {start['n_edges']} edges, faithfulness {start['faithfulness']:.3f}")

# %% [markdown]
# ## Exercise 5.1: smaller *and* more faithful
#
# Search ranks edges by first-order scores (lab 2), so its circuits are not the best of their
# size. Prune whole heads: remove a head's node at every span (in the widget, click it at each
# span; in Python, `remove_head` below). Watch `explorer.evaluation["faithfulness"]` and undo
# what hurts (`explorer.undo()` undoes the last removal; `explorer.restore_node(...)` puts a
# node back).
#
# **Goal:** at most **450** edges and faithfulness at least **0.68**. Hint: some heads in the
# earliest layers do more harm than good in this circuit.

# %%
def remove_head(explorer, head):
    """Prune ``head`` (e.g. "a0.h2") at every span, like clicking its node in each column."""
    explorer.remove_node(head)  # a name without "@span": the head at every span
    ev = explorer.evaluation
    print(f"without {head}: {ev['n_edges']} edges, faithfulness {ev['faithfulness']:.3f}")

# %%
# A student clicks these heads away in the widget; the solution makes the same edits from Python.  # SOLUTION
for head in ["a0.h2", "a0.h0", "a1.h0", "a0.h1"]:  # SOLUTION
    remove_head(explorer, head)  # SOLUTION
# EXERCISE: ...  # YOUR CODE (or prune in the widget above): remove_head(explorer, head) for the heads you choose
explorer.evaluation["n_edges"], explorer.evaluation["faithfulness"]

# %%
checks.pruned(explorer, model=model, ds=ds, max_edges=450, min_faithfulness=0.68)

# %% [markdown]
# Which edges carry the behaviour here? Nobody knows for sure: toy-ioi was trained, not built.
# To *grade* a discovery method we need a model whose circuit we know.
#
# ## Part 2: a model with a known circuit
#
# `induction-groundtruth` is a 2-layer, 2-head GPT-2 whose weights are **set by hand** (nothing is
# trained). Prompts are `pre A B mid A` (with `pre` and `mid` 0-5 filler words), and the model
# predicts `B`: after the second `A`, copy what followed the first `A` (*induction*). The
# counterfactual replaces A, B by fresh words. The mechanism:
#
# * `a0.h0`, a previous-token head: at `B` it reads the value at `A1` and writes "the previous token was A";
# * `a1.h0`, the induction head: at `A2` its query (the token A) matches the key at `B` (previous token A); it copies the value at `B` (the token B) into the logits;
# * `a0.h1` and `a1.h1` are **decoys**: they read everything and write where nobody looks.
#
# `groundtruth.TRUE_EDGES` lists the 9 edges (edge-table keys) whose patching changes the answer.

# %%
gt_model = pw.models.load("induction-groundtruth", dtype="float64")
gt_ds = pw.Dataset.from_records(groundtruth.make_records(48), gt_model)
gt_res = pw.attribute(gt_model, gt_ds, method="peap", progress=False)
print(gt_ds.tokens(0), gt_ds.examples[0].span_dict(gt_ds.schema))
groundtruth.TRUE_EDGES

# %% [markdown]
# Here we keep q, k and v crossing edges apart (`merge_qkv=False`), so that one edge is one
# row of the edge table, and start from the greedy circuit of 20 edges (edges left without a path
# from the input to the logits are dropped, so a few less remain).

# %%
gt_explorer = pw.CircuitExplorer(gt_res, gt_model, gt_ds, n_edges=20, merge_qkv=False)
gt_explorer

# %% [markdown]
# ## Exercise 5.2: precision and recall
#
# Compare the explorer's circuit with the truth, row by row: **precision** = the fraction of its
# edges that are true edges, **recall** = the fraction of the 9 true edges it contains.
# `pw.lab.shared.edge_keys(circuit)` gives a circuit's edges as a set of edge-table keys.

# %%
found = pw.lab.shared.edge_keys(gt_explorer.circuit)
truth = set(groundtruth.TRUE_EDGES)
precision = len(found & truth) / len(found)  # SOLUTION
recall = len(found & truth) / len(truth)  # SOLUTION
# EXERCISE: precision = ...  # YOUR CODE
# EXERCISE: recall = ...     # YOUR CODE
precision, recall

# %%
checks.precision_recall((precision, recall), circuit=gt_explorer.circuit)

# %% [markdown]
# ## Exercise 5.3: prune to what matters
#
# Faithfulness is 1.0 now. Prune everything you can remove while it stays at 1.0 (above 0.999):
# first the decoy heads (every span), then single edges. Stop when removing *any* remaining edge
# would lower faithfulness. (Names for Python: nodes `"a0.h1@B"`, edges as the explorer shows
# them, e.g. `"input->logits@A2"` or `"a0.h0<v>@B->a0.h0@A2"`.)

# %%
# A student clicks these in the widget; the solution makes the same edits from Python:  # SOLUTION
# the decoys at every span, then the six edges whose removal leaves faithfulness at 1.0.  # SOLUTION
for span in gt_ds.schema.spans:  # SOLUTION
    gt_explorer.remove_node(f"a0.h1@{span}")  # SOLUTION
    gt_explorer.remove_node(f"a1.h1@{span}")  # SOLUTION
for edge in ["input->logits@A2", "a0.h0->logits@A2", "input->a0.h0<v>@B", "input->a1.h0<k>@B",  # SOLUTION
             "a0.h0->a1.h0<v>@B", "a0.h0<v>@B->a0.h0@A2"]:  # SOLUTION
    gt_explorer.remove_edge(edge)  # SOLUTION
# EXERCISE: ...  # YOUR CODE (or prune in the widget above)
print(gt_explorer.evaluation["n_edges"], "edges, faithfulness", gt_explorer.evaluation["faithfulness"])

# %%
checks.true_circuit(gt_explorer, model=gt_model, ds=gt_ds)
true_circuit = gt_explorer.circuit          # keep a copy of this circuit for later

# %% [markdown]
# ## Exercise 5.4: minimality
#
# A circuit is **minimal** when every edge is needed: removing any one of them lowers
# faithfulness. For each edge of `true_circuit`, remove it from a copy
# (`c = true_circuit.copy(); c.remove_edge(name, merged=False)`), evaluate, and record the drop
# f(C) - f(C minus the edge). What is the **smallest** drop?

# %%
gt_evaluator = pw.Evaluator(gt_model, gt_ds)
f_true = gt_evaluator.run(true_circuit).faithfulness
drops = {}
for row in np.nonzero(true_circuit.in_rows)[0]:
    name = true_circuit.space.edge_name(row)
    c = true_circuit.copy()  # SOLUTION
    c.remove_edge(name, merged=False)  # SOLUTION
    drops[name] = f_true - gt_evaluator.run(c).faithfulness  # SOLUTION
    # EXERCISE: ...  # YOUR CODE: drops[name] = f_true - (faithfulness without this edge)
smallest_drop = min(drops.values())  # SOLUTION
# EXERCISE: smallest_drop = ...  # YOUR CODE
drops

# %%
checks.minimal(smallest_drop, circuit=true_circuit, model=gt_model, ds=gt_ds)

# %% [markdown]
# ## Exercise 5.5: an even smaller faithful circuit
#
# Keep pruning the explorer. Remove the **query path** edges (`input->a1.h0<q>@A2`,
# `a1.h0<q>@A2->a1.h0@A2[B]`): faithfulness drops. Now remove the **key path** too (the four
# edges through `a0.h0` and `a1.h0<k>`). Watch what happens, and find the smallest circuit with
# faithfulness at least 0.99.

# %%
# A student clicks these in the widget; the solution: the query path, then the key path.  # SOLUTION
for edge in ["input->a1.h0<q>@A2", "a1.h0<q>@A2->a1.h0@A2[B]"]:  # SOLUTION
    gt_explorer.remove_edge(edge)  # SOLUTION
print("without the query path:", round(gt_explorer.evaluation["faithfulness"], 3))  # SOLUTION
for edge in ["input->a0.h0<v>@A1", "a0.h0<v>@A1->a0.h0@B", "a0.h0->a1.h0<k>@B",  # SOLUTION
             "a1.h0<k>@B->a1.h0@A2"]:  # SOLUTION
    gt_explorer.remove_edge(edge)  # SOLUTION
# EXERCISE: ...  # YOUR CODE (or prune in the widget)
print(gt_explorer.evaluation["n_edges"], "edges, faithfulness", round(gt_explorer.evaluation["faithfulness"], 3))
small_circuit = gt_explorer.circuit

# %%
checks.smallest_faithful(gt_explorer, model=gt_model, ds=gt_ds, min_faithfulness=0.99)

# %% [markdown]
# The 3-edge circuit (copy B's value at A2 into the logits) is **faithful** and **minimal**, yet it
# leaves out how the model *finds* B. The counterfactual replaces A in the query and in the keys at
# once, so the corrupted query still matches the corrupted key at the same position: removing
# both paths cancels out. Faithfulness only tests the circuit against *this* ablation.
#
# ## Exercise 5.6: completeness
#
# A **complete** circuit contains everything the model uses. Test: knock out the same edges K from
# the circuit and from the full model; a complete circuit reacts like the model. With K = the
# query edge `input->a1.h0<q>@A2`, compute the **completeness gap** |f(C minus K) - f(full minus K)|
# for `true_circuit` and for `small_circuit` (an edge not in C just stays out). Answer with a dict
# `{"true": ..., "small": ...}`.

# %%
K = "input->a1.h0<q>@A2"
full_minus_K = gt_res.full_circuit()
full_minus_K.remove_edge(K, merged=False)
f_model_K = gt_evaluator.run(full_minus_K).faithfulness
gaps = {}
for label, circ in [("true", true_circuit), ("small", small_circuit)]:
    c = circ.copy()  # SOLUTION
    c.remove_edge(K, merged=False)  # SOLUTION
    gaps[label] = abs(gt_evaluator.run(c).faithfulness - f_model_K)  # SOLUTION
    # EXERCISE: ...  # YOUR CODE: gaps[label] = |f(circ minus K) - f_model_K|
print(f"f(full minus K) = {f_model_K:.3f}")
gaps

# %%
checks.completeness_gap(gaps, model=gt_model, ds=gt_ds, circuits={"true": true_circuit, "small": small_circuit},
                        full=gt_res.full_circuit(), knockout=K)

# %% [markdown]
# ## Compare with plain EAP
#
# EAP has no positions and no crossing edges: its best circuit here is `input -> a1.h0<v>` and
# `a1.h0 -> logits` **at every token**, faithful (1.0) but just as incomplete as `small_circuit`,
# and it cannot say at which positions the head reads.

# %%
gt_eap = pw.attribute(gt_model, gt_ds, method="eap", progress=False)
eap_circuit = gt_eap.circuit(n_edges=2)
print(eap_circuit.edges[["src", "dst", "score"]].to_string(index=False))
print("faithfulness:", round(gt_evaluator.run(eap_circuit).faithfulness, 3),
      f" real edges per example: {eap_circuit.n_real_edges:.1f} (the PEAP circuit: {true_circuit.n_real_edges:.0f})")

# %% [markdown]
# ## Summary
#
# * Search gives a starting point; pruning by hand with faithfulness in view can find smaller,
#   better circuits (part 1).
# * Against a known circuit, precision and recall grade discovery; PEAP's positional graph
#   contains the hand-built circuit, edge for edge.
# * **Faithful** (behaves like the model under the ablation), **minimal** (no edge to spare) and
#   **complete** (reacts like the model when parts are knocked out) are different properties:
#   the 3-edge circuit has the first two, only the 9-edge circuit has all three.

# %%
pw.lab.summary("lab5")
