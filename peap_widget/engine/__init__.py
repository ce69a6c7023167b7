"""Layer 6, engine: the numbers. `ablation` builds the values a removed edge takes, `scores`
holds the closed forms (span aggregation, crossing edges), `attribution` runs PEAP / EAP /
EAP-IG over batches, `integrated` the IG path, `evaluate` the ablated forward passes of a
circuit, and `metrics` the task metrics. Every model-touching function is a job for
`runtime.remote.run`."""
