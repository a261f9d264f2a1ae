"""Count a model's parameters from its config alone (meta device, no weights, no network).

    python examples/count_config.py
"""
from __future__ import annotations

from transformers import Qwen3MoeConfig

import runprof

# A config runprof ships (alias), and one written by hand.
mixtral = runprof.count_params("mixtral")
print(f"Mixtral-8x7B: {mixtral.params.total:,} params, {mixtral.params.active_per_token['all']:,} active per token")

cfg = Qwen3MoeConfig(hidden_size=2048, num_hidden_layers=48, num_experts=128, num_experts_per_tok=8,
                     moe_intermediate_size=768, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                     vocab_size=151936)
r = runprof.count_params(cfg)
print(f"Qwen3-30B-A3B-shaped: {r.params.total:,} total, {r.params.active_per_token['all']:,} active")
for group, n in r.params.by_group.items():
    if n:
        print(f"  {group:15s} {n:>16,}")
