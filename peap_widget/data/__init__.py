"""Layer 1, data: span schemas (`schema`), datasets and batches (`dataset`), the shipped
word-level tokenizers (`tokenizer`), the PEAP paper's CSV files (`paper_data`) and built-in
tasks (`tasks`). Imports nothing but `errors` and `util`; never a torch model."""
