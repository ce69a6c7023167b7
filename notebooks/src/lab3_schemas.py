# Lab 3 source (see notebooks/build_labs.py for the markers).
# lab: requires_widgets=SchemaEditor,FaithfulnessCurves

# %% [markdown]
# # Lab 3: Span schemas
#
# **Goals.** By the end of this lab you can
#
# 1. annotate prompts of different lengths with a **span schema** by hand, in the `SchemaEditor`;
# 2. read the editor's validation and fix an annotation that breaks a rule;
# 3. compare your annotation with the built-in IOI schema;
# 4. explain what goes wrong without positions, and what a too-coarse schema costs.
#
# **Time:** about 45 minutes; under a minute of compute. Cells with `...` are yours; run the check below each.
#
# **About the widget.** In the editor, select tokens (click, shift-click or drag) and press a
# number key or click a span type to tag them; arrows change the example. Everything you do there
# has a Python equivalent (`editor.set_spans(i, {...})`), and the checks read the editor's state
# from Python (`editor.dataset`, `editor.validation()`). The solution uses `set_spans` where a
# student would click.

# %%
import matplotlib.pyplot as plt

import peap_widget as pw
import peap_widget.lab

checks = pw.lab.lab3
model = pw.models.load("toy-ioi", dtype="float64")
task = pw.tasks.get("ioi", n=4, order="ABBA", seed=3)
# the four prompts without their spans: what you would have before annotating
records = [{k: r[k] for k in ("clean", "corrupted", "correct", "incorrect")}
           for r in task.token_records(model.tokenizer)]
SCHEMA = ["prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"]
for r in records:
    print(r["clean"], "->", r["correct"])

# %% [markdown]
# ## Why spans?
#
# These prompts have 16 to 20 tokens, and the names sit at different positions. To compare one
# prompt's computation with another's (and to average scores over prompts), we need to say which
# tokens *play the same role*. A **span schema** is an ordered list of span types; every example
# assigns each span a range of tokens `[start, end)` such that
#
# * the spans cover every token, in schema order, without gaps or overlaps (a span may be empty);
# * the last span holds exactly the last token (where the model predicts).
#
# The IOI schema of the PEAP paper: `prefix` (anything before the first name), `IO`, `and`, `S1`,
# `S1+1` (the word after S1), `action1` (up to and including the punctuation), `S2`, `action2`,
# `to` (the last token).

# %%
editor = pw.SchemaEditor(records, schema=SCHEMA, model=model)
editor

# %%
for i, toks in enumerate(editor.tokens):
    print(i, " ".join(f"{j}:{t}" for j, t in enumerate(toks)))

# %% [markdown]
# ## Exercise 3.1: annotate the four prompts
#
# Tag every span of the four examples in the editor above (or write them out with
# `editor.set_spans(i, {"prefix": [0, 4], ...})`, end-exclusive token ranges). An empty span is
# `[k, k]`. When `editor.validation()` is empty, every example is valid.

# %%
# A student tags these tokens in the widget; the solution writes the same spans from Python.  # SOLUTION
editor.set_spans(0, {"prefix": [0, 4], "IO": [4, 5], "and": [5, 6], "S1": [6, 7], "S1+1": [7, 8],  # SOLUTION
                     "action1": [8, 12], "S2": [12, 13], "action2": [13, 18], "to": [18, 19]})  # SOLUTION
editor.set_spans(1, {"prefix": [0, 4], "IO": [4, 5], "and": [5, 6], "S1": [6, 7], "S1+1": [7, 8],  # SOLUTION
                     "action1": [8, 14], "S2": [14, 15], "action2": [15, 19], "to": [19, 20]})  # SOLUTION
editor.set_spans(2, {"prefix": [0, 5], "IO": [5, 6], "and": [6, 7], "S1": [7, 8], "S1+1": [8, 9],  # SOLUTION
                     "action1": [9, 13], "S2": [13, 14], "action2": [14, 18], "to": [18, 19]})  # SOLUTION
editor.set_spans(3, {"prefix": [0, 0], "IO": [0, 1], "and": [1, 2], "S1": [2, 3], "S1+1": [3, 4],  # SOLUTION
                     "action1": [4, 11], "S2": [11, 12], "action2": [12, 15], "to": [15, 16]})  # SOLUTION
# EXERCISE: ...  # YOUR CODE (or tag the tokens in the widget above)
editor.validation()

# %%
checks.annotation(editor, task=task, model=model)

# %% [markdown]
# ## Exercise 3.2: what does validation catch?
#
# A classmate annotated example 0 like this, leaving the comma out of `action1`. Put it into a
# second editor and read its validation. Which **rule** does it break? (Answer with the rule's
# name, as in the `rule` column.)

# %%
classmate = {"prefix": [0, 4], "IO": [4, 5], "and": [5, 6], "S1": [6, 7], "S1+1": [7, 8],
             "action1": [8, 11], "S2": [12, 13], "action2": [13, 18], "to": [18, 19]}
second = pw.SchemaEditor(records[:1], schema=SCHEMA, model=model)
second.set_spans(0, classmate)
second.validation()

# %%
rule = second.validation().rule[0]  # SOLUTION
# EXERCISE: rule = ...  # YOUR CODE: the rule's name, e.g. "nonempty"
rule

# %%
checks.broken_rule(rule, spans=classmate, n_tokens=len(editor.tokens[0]), schema=SCHEMA)

# %% [markdown]
# Validation catches broken *rules*, not wrong *choices*: putting the comma into `S2` instead of
# `action1` would be valid, yet it would make `S2` mean something else than in the other
# examples. Consistency is your job; compare with a reference when there is one.
#
# ## Comparing with the built-in schema
#
# The task generator knows where each part of its sentences is (character ranges), and maps them
# to any tokenizer's tokens. Your annotation, as a dataset, against the built-in one (PEAP's CSV
# form: the first token of each span, and the length):

# %%
mine = editor.dataset if editor.validation().empty else None
built_in = task.dataset(model)
print("yours:")
print(mine.to_peap_csv().drop(columns=["prompt", "corrupted", "correct", "incorrect"]) if mine else "not valid yet")
print("built in:")
print(built_in.to_peap_csv().drop(columns=["prompt", "corrupted", "correct", "incorrect"]))

# %% [markdown]
# ## What goes wrong without positions
#
# Take the lab dataset of labs 1, 2 and 4 (32 prompts). Without a schema, the only way to line up
# two prompts is by token index.
#
# ## Exercise 3.3: where is the indirect object?
#
# At how many **different token positions** does the `IO` name occur across the 32 prompts?
# (`ex.spans[i]` is the `(start, end)` of span `i` of example `ex`; `ds.schema.index("IO")` gives i.)

# %%
ds = pw.tasks.get("ioi", n=32, order="ABBA", seed=1).dataset(model)
io = ds.schema.index("IO")
n_positions = len({ex.spans[io][0] for ex in ds.examples})  # SOLUTION
# EXERCISE: n_positions = ...  # YOUR CODE
n_positions

# %%
checks.io_positions(n_positions, ds=ds)

# %% [markdown]
# So "the head reads position 4" means the IO name in some prompts and a prefix word in others.
# Plain EAP avoids the problem by summing over *all* positions, and so cannot say where anything
# happens. A schema lets PEAP keep positions *and* average over prompts.
#
# How fine should the schema be? Compare the IOI schema with a coarse one: `context` (everything
# but the last token) and `to`.

# %%
coarse_records = []
for r in ds.to_records():
    n = len(ds.tokenizer(r["clean"])["input_ids"])
    coarse_records.append({**r, "spans": {"context": [0, n - 1], "to": [n - 1, n]}})
coarse_ds = pw.Dataset.from_records(coarse_records, model)

fine_res = pw.attribute(model, ds, method="peap", progress=False)
coarse_res = pw.attribute(model, coarse_ds, method="peap", progress=False)
sizes = [10, 20, 40, 80, 160, 320, 640]
fine_curve = pw.faithfulness_curve(model, ds, {"IOI schema": fine_res}, sizes=sizes, progress=False)
coarse_curve = pw.faithfulness_curve(model, coarse_ds, {"coarse schema": coarse_res}, sizes=sizes, progress=False)
pw.FaithfulnessCurves([fine_curve, coarse_curve], x="n_real_edges", title="PEAP with two schemas, same prompts")

# %% [markdown]
# ## Exercise 3.4: what does the coarse schema cost?
#
# For each schema, how many **real per-example edges** does the smallest circuit on its curve need
# to reach faithfulness 0.5? (`curve.point(0.5)["n_real_edges"]`.) Answer `{"fine": ..., "coarse": ...}`.

# %%
cost = {"fine": fine_curve.point(0.5)["n_real_edges"], "coarse": coarse_curve.point(0.5)["n_real_edges"]}  # SOLUTION
# EXERCISE: cost = ...  # YOUR CODE
cost

# %%
checks.schema_comparison(cost, fine=fine_curve, coarse=coarse_curve, level=0.5)

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.5))
fine_curve.plot(x="n_real_edges", ax=ax)
coarse_curve.plot(x="n_real_edges", ax=ax)
ax.set_title("same prompts, two schemas", fontsize=9)
plt.show()

# %% [markdown]
# With the coarse schema every edge into `context` stands for all its tokens, so each edge the
# circuit keeps costs many real edges, and crossing edges cannot say *which* earlier part a head
# reads. The finer schema separates the names from the filler and buys the same faithfulness with
# far fewer real edges.
#
# ## Summary
#
# * A span schema names the roles tokens play, so that prompts of different lengths share one graph.
# * Validation enforces the rules (cover every token in order, last token alone); consistency of
#   choices across examples is up to the annotator.
# * Without positions (EAP) you cannot say where; with token indices you compare different things;
#   with a coarse schema you pay in circuit size. Lab 4 uses the fine IOI schema.

# %%
pw.lab.summary("lab3")
