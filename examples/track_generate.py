"""Track generate() on the shipped tiny MoE and print what each token really used.

    python examples/track_generate.py
"""
from __future__ import annotations

import torch

import runprof
from runprof.models.loading import load_model

loaded = load_model()  # runprof's shipped tiny Mixtral-architecture MoE, offline
model, tok = loaded.model, loaded.tokenizer
inputs = tok(["def fibonacci(n):", "import os\nfor path in"], return_tensors="pt", padding=True)

with torch.inference_mode(), runprof.track(model) as t:
    model.generate(**inputs, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)

r = t.result
print(runprof.render(r, full=True))
print("measured active params per token:", r.runtime.active_params_per_token["all"].mean)
print("static active params per token:  ", r.params.active_per_token["all"])
print("experts per token:", r.runtime.experts_per_token.mean, "| expert load, layer 0:", r.runtime.expert_load[0])
