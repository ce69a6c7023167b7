# Lab 2 source (see notebooks/build_labs.py for the markers).

# %% [markdown]
# # Lab 2: Edge attribution patching (EAP)
#
# **Goals.** By the end of this lab you can
#
# 1. explain EAP as a first-order (tangent-line) approximation of patching an edge;
# 2. check it: the EAP score of an edge is the *slope* of the metric when you patch that edge a little;
# 3. compare EAP scores with exact patching of the same edges, and read the scatter plot;
# 4. say where the approximation fails (saturated softmax, big changes through a nonlinearity) and why that matters for circuit discovery.
#
# **Time:** about 45 minutes; under a minute of compute. Cells with `...` are yours; run the check below each.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import peap_widget as pw
import peap_widget.lab

checks = pw.lab.lab2
model = pw.models.load("toy-ioi", dtype="float64")
ds = pw.tasks.get("ioi", n=32, order="ABBA", seed=1).dataset(model)   # the data of lab 1
evaluator = pw.Evaluator(model, ds)
print(f"clean logit difference {evaluator.clean_per_example.mean():.3f}, "
      f"counterfactual {evaluator.empty_per_example.mean():.3f}")

# %% [markdown]
# ## Why approximate?
#
# Lab 1 patched edges one at a time: one forward pass per edge. That is 479 passes for this toy
# model, 32,491 for GPT-2 small, and hundreds of thousands once edges are split by position.
#
# **Edge attribution patching** (Syed et al. 2023) estimates all of them from one clean forward
# pass, one backward pass and one counterfactual forward pass. Patching edge u -> v moves slot
# v's input by `z*_u - z_u` (lab 1). A first-order Taylor expansion of the metric m in that input:
#
#     m(patched) - m(clean)  ≈  (z*_u - z_u) · dm/dx_v
#
# summed over positions, with the gradient taken at slot v's own input x_v in the clean run. That
# product is the edge's **EAP score**. It is exact for a straight line; the question is how
# straight the model is.
#
# ## Exercise 2.1: a saturated softmax
#
# Attention weights come out of a softmax. Take one query with two keys scoring `s` and 0: the
# weight on the first key is `a(s) = softmax([s, 0])[0] = 1 / (1 + exp(-s))`, with slope
# `a(s) (1 - a(s))`. In the clean run s = 6; the counterfactual lowers it to 0.
#
# Compute the first-order estimate of the change of the weight, `a'(6) * (0 - 6)`, and the exact
# change `a(0) - a(6)`.

# %%
s_old, s_new = 6.0, 0.0


def a(s):
    return 1 / (1 + np.exp(-s))


first_order = a(s_old) * (1 - a(s_old)) * (s_new - s_old)  # SOLUTION
exact = a(s_new) - a(s_old)  # SOLUTION
# EXERCISE: first_order = ...  # YOUR CODE
# EXERCISE: exact = ...        # YOUR CODE
softmax_answer = {"first_order": first_order, "exact": exact}
softmax_answer

# %%
checks.saturated_softmax(softmax_answer, score=s_old, new_score=s_new)

# %%
s = np.linspace(-2, 8, 200)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(s, a(s), label="a(s) = softmax([s, 0])[0]")
ax.plot(s, a(s_old) + a(s_old) * (1 - a(s_old)) * (s - s_old), "--", label="tangent at s = 6 (what EAP sees)")
ax.scatter([s_old, s_new], [a(s_old), a(s_new)], color="k", zorder=3)
ax.set_ylim(-0.1, 1.1); ax.set_xlabel("attention score s"); ax.legend(fontsize=8); ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## EAP scores for the whole graph
#
# `pw.attribute(method="eap")` computes every edge's score in one go (`progress=False` hides the
# progress bar). The edge table has one row per edge; `score` is the estimated change of the
# logit difference when the edge is patched.

# %%
eap = pw.attribute(model, ds, method="eap", progress=False)
full = eap.full_circuit()
m_full = evaluator.run(full).metric
names = {i: eap.space.edge_name(i) for i in eap.edges.index}
eap.top(8).assign(name=lambda t: [names[i] for i in t.index])

# %% [markdown]
# ## Exercise 2.2: EAP is a derivative
#
# Patch the edge `a3.h2 -> logits` only a fraction alpha of the way: add `alpha * (z* - z)` to
# the input of `ln_f` (lab 1's hooks, reused below). m(0) is the clean model, m(1) the fully
# patched edge. Estimate the slope `dm/dalpha` at alpha = 0 with a small step (alpha = 1e-4) and
# compare it with the EAP score of `a3.h2->logits@all`.

# %%
hf = model.hf
LAYER, HEAD = 3, 2
d_head = hf.config.n_embd // hf.config.n_head
cols = slice(HEAD * d_head, (HEAD + 1) * d_head)
W_O = hf.transformer.h[LAYER].attn.c_proj.weight[cols]


def head_output(ids):
    """z: head a3.h2's output at every position, [T, d_model]."""
    saved = {}
    proj = hf.transformer.h[LAYER].attn.c_proj
    hook = proj.register_forward_pre_hook(lambda module, args: saved.update(x=args[0]))
    try:
        with torch.no_grad():
            hf(torch.tensor([ids]))
    finally:
        hook.remove()
    return saved["x"][0, :, cols] @ W_O


deltas = [head_output(ex.corrupted_ids) - head_output(ex.clean_ids) for ex in ds.examples]


def patched_metric(alpha):
    """Mean logit difference with a3.h2 -> logits patched a fraction alpha of the way."""
    vals = []
    for ex, delta in zip(ds.examples, deltas):
        hook = hf.transformer.ln_f.register_forward_pre_hook(lambda m, args: (args[0] + alpha * delta,))
        try:
            with torch.no_grad():
                logits = hf(torch.tensor([ex.clean_ids])).logits[0, -1]
        finally:
            hook.remove()
        vals.append((logits[ex.correct_id] - logits[ex.incorrect_id]).item())
    return float(np.mean(vals))

# %%
step = 1e-4
slope = (patched_metric(step) - patched_metric(0.0)) / step  # SOLUTION
# EXERCISE: slope = ...  # YOUR CODE: (m(step) - m(0)) / step
eap_score = eap.edges.score[eap.space.row("a3.h2->logits@all")]
slope, eap_score

# %%
checks.eap_slope(slope, model=model, ds=ds, edge="a3.h2->logits")

# %% [markdown]
# The whole curve m(alpha) against EAP's tangent line. EAP predicts the *end point* m(1) by
# following the tangent all the way from alpha = 0.

# %%
alphas = np.linspace(0, 1, 11)
curve = [patched_metric(x) for x in alphas]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(alphas, curve, "o-", label="patched a fraction alpha (exact)")
ax.plot(alphas, m_full + eap_score * alphas, "--", label=f"EAP tangent (slope {eap_score:.2f})")
ax.set_xlabel("alpha"); ax.set_ylabel("mean logit difference"); ax.legend(fontsize=8); ax.grid(alpha=0.3)
plt.show()
print(f"exact change m(1) - m(0) = {curve[-1] - curve[0]:.3f}; EAP estimate {eap_score:.3f}")

# %% [markdown]
# ## Exercise 2.3: exact patching of the top edges
#
# For the 10 edges with the largest |EAP score| (`eap.top(10)`), compute the **exact** effect
# of patching each one alone: `m(full minus the edge) - m(full)`. Put them in a dict
# `{edge name: effect}` (names as `eap.space.edge_name(row)` gives them).

# %%
exact_effects = {}
for row in eap.top(10).index:
    name = eap.space.edge_name(row)
    c = full.copy()  # SOLUTION
    c.remove_edge(name)  # SOLUTION
    exact_effects[name] = evaluator.run(c).metric - m_full  # SOLUTION
    # EXERCISE: ...  # YOUR CODE: exact_effects[name] = m(full minus this edge) - m(full)
exact_effects

# %%
checks.exact_effects(exact_effects, model=model, ds=ds, k=10)

# %% [markdown]
# ## Exercise 2.4: signs
#
# For circuit discovery the *ranking* and the *sign* matter more than the exact value. How many
# of these 10 edges have an EAP score whose sign differs from the sign of the exact effect?

# %%
n_wrong_sign = sum(np.sign(eap.edges.score[row]) != np.sign(exact_effects[eap.space.edge_name(row)])  # SOLUTION
                   for row in eap.top(10).index)  # SOLUTION
# EXERCISE: n_wrong_sign = ...  # YOUR CODE
n_wrong_sign

# %%
checks.wrong_signs(n_wrong_sign, model=model, ds=ds, k=10)

# %% [markdown]
# ## The whole picture: EAP against exact patching
#
# The 100 edges of largest |EAP score|, each patched exactly (100 evaluations, a few seconds).
# On the diagonal, EAP would be exact.

# %%
rows = eap.top(100).index
comparison = eap.edges.loc[rows, ["src", "dst"]].assign(name=[names[r] for r in rows], eap=eap.edges.score[rows])
effects = []
for name in comparison.name:
    c = full.copy()
    c.remove_edge(name)
    effects.append(evaluator.run(c).metric - m_full)
comparison["exact"] = effects

fig, ax = plt.subplots(figsize=(5, 4.5))
ax.scatter(comparison.eap, comparison.exact, s=12)
lim = [min(comparison.eap.min(), comparison.exact.min()) - 0.5, max(comparison.eap.max(), comparison.exact.max()) + 0.5]
ax.plot(lim, lim, "k--", lw=0.8, label="EAP = exact")
for _, r in comparison.head(6).iterrows():
    ax.annotate(r["name"].removesuffix("@all"), (r.eap, r.exact), fontsize=7)
ax.set_xlabel("EAP score (first order)"); ax.set_ylabel("exact patching effect"); ax.legend(); ax.grid(alpha=0.3)
plt.show()
print(f"correlation over these 100 edges: {np.corrcoef(comparison.eap, comparison.exact)[0, 1]:.2f}")

# %% [markdown]
# ## Exercise 2.5: where is EAP most wrong?
#
# Among the 20 edges of largest |EAP score| (the first 20 rows of `comparison`), which edge has
# the largest error |EAP - exact|? Give its name.

# %%
top20 = comparison.head(20)  # SOLUTION
worst = top20.loc[(top20.eap - top20.exact).abs().idxmax(), "name"]  # SOLUTION
# EXERCISE: worst = ...  # YOUR CODE: an edge name such as 'a3.h2->logits@all'
worst

# %%
checks.worst_edge(worst, model=model, ds=ds, k=20)

# %% [markdown]
# ## Where the approximation fails, and why
#
# The checks use `pw.lab.reference`, a slow plain-PyTorch copy of the model in which any edge can
# be patched part of the way. Here are m(alpha) curves for three edges with their EAP tangents:

# %%
ref = pw.lab.reference.Reference(model)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, (u, v) in zip(axes, [("a3.h2", "logits"), ("input", "m0"), ("m0", "a2.h1<k>")]):
    ys = [ref.metric(ds, remove={(u, v): float(x)}) for x in alphas]
    score = eap.edges.score[eap.space.row(f"{u}->{v}@all")]
    ax.plot(alphas, ys, "o-", ms=3, label="exact")
    ax.plot(alphas, ys[0] + score * alphas, "--", label="EAP tangent")
    ax.set_title(f"{u} -> {v}", fontsize=9); ax.set_xlabel("alpha"); ax.grid(alpha=0.3)
axes[0].set_ylabel("mean logit difference"); axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# What you should see:
#
# * **Big changes through a nonlinearity.** Swapping every name in the prompt changes the
#   embeddings a lot. `input -> m0` pushes that change through the first MLP, whose GELU is far
#   from linear over such a range: the tangent predicts a small drop, patching shows a large one.
# * **Attention.** `m0 -> a2.h1<k>` feeds a key. Attention weights are a softmax of the scores,
#   far from linear (exercise 2.1 shows the extreme case: a saturated softmax has almost no slope
#   even though a full change moves the pattern completely), and the moved pattern changes what
#   later layers read. Here the first-order estimate does not even get the sign right.
# * **Even the logits are not a straight line**: the final LayerNorm rescales the residual stream,
#   so removing a big contribution (a3.h2, the head that moves the name) does more than its tangent says.
#
# Consequences for circuit discovery: EAP ranks edges well enough to search large graphs cheaply,
# but always **evaluate** the circuit you find by real patching (faithfulness, lab 1), as the
# library does. PEAP (lab 4) keeps EAP's first-order estimate for residual edges, but for an
# attention edge between two positions it computes the change of the head's output exactly, in
# closed form (softmax included), and only the rest of the way to the metric to first order.
#
# ## Summary
#
# * EAP score of an edge = gradient at its slot x (counterfactual - clean value of its source),
#   summed over positions: the slope of patching, not the patching itself.
# * It costs one forward and one backward pass for all edges, and its ranking is informative,
#   but individual scores can be far off or even of the wrong sign for large, nonlinear effects.

# %%
pw.lab.summary("lab2")
