"""Layer 5, runtime: a loaded model and where it runs. `model` wraps an HF model in an nnsight
trace with its architecture adapter and lock; `remote` runs every model-touching job locally or
as one NDIF request; `memory` sizes batches and recognises out-of-memory errors; `grad` freezes
parameters while only activation gradients are needed."""
