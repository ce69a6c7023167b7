# Lab 1 source (see notebooks/build_labs.py for the markers).

# %% [markdown]
# # Lab 1: What is a circuit?
#
# **Goals.** By the end of this lab you can
#
# 1. run a small language model on a task and measure how well it does it (the *logit difference*);
# 2. name the parts of its computation graph: components, the slots that read them, and the edges between them;
# 3. remove one edge from the graph (*patch* it) twice: with the library's `Evaluator`, and by hand with PyTorch hooks;
# 4. define *faithfulness*: how much of the model's behaviour a circuit (a subset of edges) keeps.
#
# **Time:** about 45 minutes. Everything runs on a laptop CPU, offline, in under a minute.
#
# **How the exercises work.** Cells with `...` are yours: replace each `...` with code, run the cell,
# then run the check below it. A check prints `Correct: ...`, `Not yet: ...` (with a hint) or
# `Not answered yet: ...`; it never stops the notebook. `pw.lab.summary("lab1")` at the end lists them all.

# %%
import numpy as np
import torch

import peap_widget as pw
import peap_widget.lab  # the answer checks: pw.lab.lab1.<exercise>(your_answer, ...)

checks = pw.lab.lab1
model = pw.models.load("toy-ioi", dtype="float64")   # a 4-layer GPT-2 trained on this task; ships with peap_widget
task = pw.tasks.get("ioi", n=32, order="ABBA", seed=1)
ds = task.dataset(model)                              # 32 prompts, tokenized for this model
model, ds

# %% [markdown]
# ## The task: indirect object identification (IOI)
#
# Every prompt names two people, then repeats one of them (the *subject*, S); the model must
# complete with the other one (the *indirect object*, IO):
#
# > When **Mary** and **John** went to the store, **John** gave a drink to → **Mary**
#
# Each example also has a **counterfactual** (corrupted) prompt: the same sentence with three
# fresh names, so nothing in it points to Mary. `toy-ioi` is a 4-layer, 4-head GPT-2 with 212k
# parameters, trained only on this task. (We run it in float64 so that exact comparisons in the
# checks are crisp; it is small enough not to care.)

# %%
ex = ds.examples[0]
print("clean:      ", ex.clean)
print("corrupted:  ", ex.corrupted)
print("answer:     ", repr(ex.correct), "  the other name:", repr(ex.incorrect))
print("tokens:     ", ds.tokens(0))
print("token ids:  ", ex.clean_ids)

# %% [markdown]
# ## Exercise 1.1: the logit difference
#
# We measure the model with the **logit difference** at the last token:
# `logit[correct] - logit[incorrect]`. Positive means the model prefers the right name.
#
# `model.hf` is a plain Hugging Face `GPT2LMHeadModel`; `model.hf(ids).logits` has shape
# `[batch, positions, vocabulary]`. Complete `logit_diff`, then average it over the clean
# prompts of all 32 examples.

# %%
def logit_diff(ids, ex):
    """logit[correct] - logit[incorrect] at the last position of one prompt (a list of token ids)."""
    with torch.no_grad():
        logits = model.hf(torch.tensor([ids])).logits[0, -1]   # the last position
    return (logits[ex.correct_id] - logits[ex.incorrect_id]).item()  # SOLUTION
    # EXERCISE: return ...  # YOUR CODE: use ex.correct_id and ex.incorrect_id


clean_ld = np.mean([logit_diff(ex.clean_ids, ex) for ex in ds.examples])  # SOLUTION
# EXERCISE: clean_ld = ...  # YOUR CODE: the mean of logit_diff over every example's clean prompt
clean_ld

# %%
checks.clean_logit_diff(clean_ld, model=model, ds=ds)

# %% [markdown]
# ## Exercise 1.2: the counterfactual logit difference
#
# Now the same measurement on the **corrupted** prompts (`ex.corrupted_ids`), keeping the clean
# answers. What do you expect?

# %%
cf_ld = np.mean([logit_diff(ex.corrupted_ids, ex) for ex in ds.examples])  # SOLUTION
# EXERCISE: cf_ld = ...  # YOUR CODE
cf_ld

# %%
checks.counterfactual_logit_diff(cf_ld, model=model, ds=ds)

# %% [markdown]
# ## The computation graph
#
# A transformer's residual stream is a **sum**: at every position, the input to any part of the
# model is the embedding plus the outputs of everything before it. So we can draw it as a graph:
#
# * **components** write into the residual stream: `input` (token + position embeddings), every
#   attention head `a{layer}.h{head}` (its output after its slice of `W_O`), every MLP `m{layer}`;
# * **slots** read from it: each head's query, key and value inputs `a{L}.h{H}<q>`, `<k>`, `<v>`
#   (each head gets its own copy), each MLP's input `m{L}`, and the final `logits`;
# * an **edge** `u -> v` connects a component to a slot downstream of it: `input`, every head and
#   MLP of an earlier layer, and (GPT-2 runs attention before the MLP) the heads of the MLP's own layer.
#
# Slot v's input is the sum over its edges of what their components wrote (plus biases).

# %%
g = model.graph
print(g.n_forward, "components:", g.forward_names)
print(g.n_backward, "slots:", g.backward_names[:14], "...")

# %% [markdown]
# ## Exercise 1.3: count edges
#
# (a) How many edges end in the query input of head 1 of layer 2, `a2.h1<q>`?
#
# (b) How many edges does the whole graph have? (Count without code first, then check with code
# if you like: `model.hf.config.n_layer` and `n_head` give the shape.)

# %%
n_into = 1 + 2 * (4 + 1)  # SOLUTION
# EXERCISE: n_into = ...  # YOUR CODE (a)
L, H = model.hf.config.n_layer, model.hf.config.n_head
n_total = (3 * H * sum(1 + layer * (H + 1) for layer in range(L))   # q, k, v of every head  # SOLUTION
           + sum(1 + layer * (H + 1) + H for layer in range(L))      # every MLP  # SOLUTION
           + 1 + L * (H + 1))                                        # the logits  # SOLUTION
# EXERCISE: n_total = ...  # YOUR CODE (b)
n_into, n_total

# %%
checks.edges_into_slot(n_into, model=model, slot="a2.h1<q>")
checks.n_edges(n_total, model=model)

# %% [markdown]
# The library lists every edge by name. Without positions (the same edge at every token) the
# names look like `a3.h2->logits@all`:

# %%
space = pw.graph.EdgeSpace(model.graph, ["all"], crossing=False)
print(len(space), "edges, e.g.", [space.edge_name(i) for i in (0, 12, 100, len(space) - 1)])
space.table.tail()

# %% [markdown]
# ## Circuits and patching
#
# A **circuit** is a subset of the edges. To run a circuit we run the clean prompt, but every
# edge *not* in the circuit carries the value its component had on the **counterfactual**
# prompt instead (z\* instead of z). This is *activation patching*, one edge at a time:
#
# * the **full** circuit (all edges) is the clean model;
# * the **empty** circuit (no edges) sees only the counterfactual run.
#
# `pw.Evaluator` runs the clean and counterfactual prompts once and then evaluates any circuit
# with one patched forward pass.

# %%
evaluator = pw.Evaluator(model, ds)
full = pw.Circuit(space, np.ones(len(space), dtype=bool))
empty = pw.Circuit(space, np.zeros(len(space), dtype=bool))
m_full, m_empty = evaluator.run(full).metric, evaluator.run(empty).metric
print(f"full circuit: {m_full:.4f}   empty circuit: {m_empty:.4f}")

# %% [markdown]
# ## Exercise 1.4: remove one edge with the Evaluator
#
# Take the edge from head `a3.h2` to the logits out of a copy of the full circuit
# (`circuit.remove_edge(name)`) and evaluate it. What is the mean logit difference now?

# %%
without = full.copy()
without.remove_edge("a3.h2->logits@all")  # SOLUTION
# EXERCISE: ...  # YOUR CODE: remove the edge 'a3.h2->logits@all' from `without`
m_without = evaluator.run(without).metric  # SOLUTION
# EXERCISE: m_without = ...  # YOUR CODE: the mean logit difference of `without`
m_without

# %%
checks.evaluator_without_edge(m_without, model=model, ds=ds, edge="a3.h2->logits")

# %% [markdown]
# ## Exercise 1.5: the same patch by hand
#
# No magic: "remove the edge `a3.h2 -> logits`" means that the **logits** read the residual
# stream with head a3.h2's clean output z replaced by its counterfactual output z\*, while every
# other slot (for instance the MLP `m3`, which also reads a3.h2) still sees the clean z.
#
# The final residual stream goes through `ln_f` (the last LayerNorm) to the logits, and nothing
# else reads it. So adding `delta = z* - z` to the input of `ln_f` removes exactly this edge.
# The helpers below read a head's output with a PyTorch forward hook and add `delta` with another.

# %%
hf = model.hf
LAYER, HEAD = 3, 2
d_head = hf.config.n_embd // hf.config.n_head
cols = slice(HEAD * d_head, (HEAD + 1) * d_head)
W_O = hf.transformer.h[LAYER].attn.c_proj.weight[cols]        # this head's rows of W_O: [d_head, d_model]


def head_output(ids):
    """z: the output of head a3.h2 at every position, [T, d_model] (its slice of W_O, no bias)."""
    saved = {}
    proj = hf.transformer.h[LAYER].attn.c_proj                 # its input: all heads' outputs side by side
    hook = proj.register_forward_pre_hook(lambda module, args: saved.update(x=args[0]))
    try:
        with torch.no_grad():
            hf(torch.tensor([ids]))
    finally:
        hook.remove()
    return saved["x"][0, :, cols] @ W_O


def logit_diff_with_final_change(ex, delta):
    """Logit difference of the clean run of `ex` with `delta` [T, d_model] added to ln_f's input."""
    if delta is ...:                                           # the exercise is not filled in yet
        return ...
    hook = hf.transformer.ln_f.register_forward_pre_hook(lambda module, args: (args[0] + delta,))
    try:
        with torch.no_grad():
            logits = hf(torch.tensor([ex.clean_ids])).logits[0, -1]
    finally:
        hook.remove()
    return (logits[ex.correct_id] - logits[ex.incorrect_id]).item()

# %% [markdown]
# Fill in `delta` for each example and average the patched logit differences. You should get
# the Evaluator's number from exercise 1.4.

# %%
hand = []
for ex in ds.examples:
    z_clean = head_output(ex.clean_ids)
    z_cf = head_output(ex.corrupted_ids)
    delta = z_cf - z_clean  # SOLUTION
    # EXERCISE: delta = ...  # YOUR CODE: how removing the edge changes what the logits read
    hand.append(logit_diff_with_final_change(ex, delta))
hand_ld = np.mean(hand)  # SOLUTION
# EXERCISE: hand_ld = ...  # YOUR CODE: the mean over the examples
hand_ld

# %%
checks.hand_patch(hand_ld, model=model, ds=ds, edge="a3.h2->logits")

# %% [markdown]
# The library's engine does the same thing through [nnsight](https://nnsight.net) traces, for
# every slot at once. Here is this one patch for one example in nnsight (`model.nn` wraps the
# same weights): read z\* in one trace, then in the clean trace add `z* - z` to ln_f's input.

# %%
ex = ds.examples[0]
nn = model.nn
with torch.no_grad():
    with nn.trace(torch.tensor([ex.corrupted_ids])):
        z_star = (nn.transformer.h[LAYER].attn.c_proj.input[0, :, cols] @ W_O).save()
    with nn.trace(torch.tensor([ex.clean_ids])):
        z = nn.transformer.h[LAYER].attn.c_proj.input[0, :, cols] @ W_O
        nn.transformer.ln_f.input = nn.transformer.ln_f.input + (z_star - z)
        last = nn.lm_head.output[0, -1].save()
print("nnsight, example 0:", (last[ex.correct_id] - last[ex.incorrect_id]).item())
print("Reference (the checks' own plain-PyTorch graph):",
      pw.lab.reference.Reference(model).per_example(ds[:1], {("a3.h2", "logits"): 1.0})[0])

# %% [markdown]
# ## Faithfulness
#
# How much of the model's behaviour does a circuit C keep? With m the mean logit difference,
#
#     f(C) = (m(C) - m(empty)) / (m(full) - m(empty))
#
# so the full circuit scores 1 and the empty one 0. (This is MIB's *normalized faithfulness*;
# the Evaluator also reports the plain ratio m(C)/m(full) as `soft`, argmax agreement as `hard`,
# and a KL divergence.)
#
# ## Exercise 1.6: faithfulness of "everything but one edge"
#
# Compute f for the circuit `without` of exercise 1.4 from `m_without`, `m_full` and `m_empty`.

# %%
f_without = (m_without - m_empty) / (m_full - m_empty)  # SOLUTION
# EXERCISE: f_without = ...  # YOUR CODE
f_without

# %%
checks.faithfulness(f_without, model=model, ds=ds, edge="a3.h2->logits")

# %% [markdown]
# ## Exercise 1.7: the empty circuit
#
# Look at `m_empty`. It equals one of the numbers you computed earlier: (a) the clean logit
# difference, (b) the counterfactual logit difference, (c) zero. Answer `"a"`, `"b"` or `"c"`.

# %%
empty_is = "b"  # SOLUTION
# EXERCISE: empty_is = ...  # YOUR CODE: "a", "b" or "c"

# %%
checks.empty_circuit(empty_is, model=model, ds=ds)

# %% [markdown]
# ## Exercise 1.8: which edge into the logits matters most?
#
# Every component writes directly into the logits. Remove each of those edges on its own
# (a fresh copy of `full` each time), evaluate, and find the edge whose removal leaves the
# **lowest** mean logit difference.

# %%
into_logits = [space.edge_name(i) for i in range(len(space)) if space.table.dst[i] == "logits"]
metrics = {}
for name in into_logits:
    c = full.copy()  # SOLUTION
    c.remove_edge(name)  # SOLUTION
    metrics[name] = evaluator.run(c).metric  # SOLUTION
    # EXERCISE: ...  # YOUR CODE: metrics[name] = the metric of the full circuit minus this edge
most_important = min(metrics, key=metrics.get)  # SOLUTION
# EXERCISE: most_important = ...  # YOUR CODE: the name of that edge
most_important

# %%
checks.most_important_logit_edge(most_important, model=model, ds=ds)

# %% [markdown]
# ## Summary
#
# * A model's computation is a graph: components write to the residual stream, slots read it,
#   and each edge is one component's contribution to one slot.
# * Removing an edge = giving its slot the counterfactual value of its component; the full
#   circuit is the clean model, the empty circuit the counterfactual one.
# * Faithfulness puts a circuit on the scale from empty (0) to full (1).
# * Patching one edge costs one forward pass. This graph has 479 edges, GPT-2 small 32,491, and
#   with positions many more: next lab, we estimate all of them at once (EAP).

# %%
pw.lab.summary("lab1")
