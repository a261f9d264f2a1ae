"""Tiny configurations for every Mixture-of-Experts causal-LM architecture in transformers.

This module is a test helper: it maps each MoE ``model_type`` registered in
``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` to a small configuration (hidden size 64,
2-4 layers, 8 experts, top-k 2, vocab 128) that builds, runs a forward pass and a
short greedy ``generate()`` on CPU in fp32 within a fraction of a second.

Dense-first layers are kept where the architecture has them (so every tiny model
has at least one dense layer followed by at least two MoE layers where possible),
and hybrid models get ``layer_types`` lists that mix their attention and
linear/recurrent layer kinds consistently with ``num_hidden_layers``.

All per-type fields live in :data:`_TINY_CONFIGS`. For composite (multimodal)
configs, ``"text_config"`` names the entry holding the text-model fields (e.g.
``"gemma4" -> "gemma4_text"``) and the vision/audio towers are shrunk or dropped.
Sizes are chosen so that every expert dimension is distinct (hidden 64, expert
intermediate 24, fused gate/up 48, 8 experts, top-k 2), which makes the layout of
fused expert parameters unambiguous from their shapes.

Known quirks encoded here: MLA models need ``num_key_value_heads ==
num_attention_heads``; DBRX needs ``attn_config.rope_theta`` and a non-null
``clip_qkv``; Doge needs ``is_moe=True`` and a perfect-square expert count; Zaya
only supports top-1; Dots3-Note's default ``per_layer_config`` re-inflates some
layers and its sliding-window head_dim must equal ``qk_nope + qk_rope``; Gemma-4
needs ``enable_moe_block=True``; Qwen4-Exp needs all five ``indexer_*`` fields for
``indexed_attention`` layers.

CPU timing: building and running one forward of every type takes ~3 s in total
with ``torch.set_num_threads(1)`` (each type < 0.15 s); with several threads on a
loaded 2-core machine thread oversubscription can make it 10x slower.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

__all__ = [
    "DENSE_MODEL_TYPES",
    "EXCLUDED",
    "MOE_MODEL_TYPES",
    "tiny_config",
    "tiny_model",
]

#: Token ids kept inside the tiny vocabulary for every config.
_SPECIAL_TOKENS: dict[str, int] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

#: Fields shared by most tiny text configs (a type's own dict overrides them).
_BASE: dict[str, Any] = {
    "vocab_size": 128,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "max_position_embeddings": 256,
    **_SPECIAL_TOKENS,
}

#: Grouped-query attention sizes for configs that expose ``head_dim``.
_GQA: dict[str, Any] = {"num_key_value_heads": 2, "head_dim": 16}

#: Multi-head latent attention (DeepSeek-V2/V3 style) sizes; MLA needs kv heads == heads.
_MLA: dict[str, Any] = {
    "num_key_value_heads": 4,
    "kv_lora_rank": 16,
    "q_lora_rank": 32,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
    "head_dim": 8,
}

#: DeepSeek-style routed-expert settings (8 routed experts, top-2, one shared expert, 1 group).
_DS_MOE: dict[str, Any] = {
    "moe_intermediate_size": 24,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
}

#: Sparse-attention indexer sizes (DeepSeek-V3.2 style "indexed_attention").
_INDEXER: dict[str, Any] = {"index_topk": 4, "index_head_dim": 16, "index_n_heads": 2}

_DENSE_SPARSE_3: list[str] = ["dense", "sparse", "sparse"]

#: model_type -> tiny config kwargs, applied on top of :data:`_BASE` unless ``"_no_base"`` is
#: set. A string ``"text_config"`` names the entry that provides a composite config's text
#: sub-config.
_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # ---------------------------------------------------------------- dense controls
    "llama": {"num_hidden_layers": 2, **_GQA, "intermediate_size": 64},
    "mistral": {"num_hidden_layers": 2, **_GQA, "intermediate_size": 64, "sliding_window": 16},
    # ---------------------------------------------------------------- MoE types
    "afmoe": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "num_dense_layers": 1,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_shared_experts": 1,
        "global_attn_every_n_layers": 2,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    },
    "aria_text": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 24,
        "moe_num_experts": 8,
        "moe_topk": 2,
        "moe_num_shared_experts": 1,
    },
    "axk1": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "axk2": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        **_INDEXER,
        "gated_norm_rank": 4,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["indexed_attention"] * 3,
    },
    "bailing_hybrid": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        "num_key_value_heads": 4,
        "head_dim": 16,
        "kv_lora_rank": 16,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 16,
        "v_head_dim": 16,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_shared_experts": 1,
        "num_experts_per_token": 2,
        "num_expert_group": 1,
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "linear_head_dim": 16,
        "linear_num_heads": 4,
        "layer_group_size": 3,
        "layer_types": ["linear_attention", "linear_attention", "full_attention"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "beam": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "cohere2_moe": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 24,
        "prefix_dense_intermediate_size": 64,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_shared_experts": 1,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "dbrx": {
        # DBRX uses its own field names and nested attn/ffn sub-configs.
        "_no_base": True,
        "vocab_size": 128,
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "max_seq_len": 256,
        "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
        "ffn_config": {"ffn_hidden_size": 24, "moe_num_experts": 8, "moe_top_k": 2},
        **_SPECIAL_TOKENS,
    },
    "deepseek_v2": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        "first_k_dense_replace": 1,
        "topk_method": "greedy",
    },
    "deepseek_v3": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        "first_k_dense_replace": 1,
    },
    "deepseek_v32": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        **_INDEXER,
        "first_k_dense_replace": 1,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["indexed_attention"] * 3,
    },
    "deepseek_v4": {
        # Layer 0 is a hash-routed MoE (expert ids = tid2eid[input_ids]); no dense layers exist.
        "num_hidden_layers": 3,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "q_lora_rank": 32,
        "o_groups": 2,
        "o_lora_rank": 16,
        "moe_intermediate_size": 24,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        **_INDEXER,
        "sliding_window": 16,
        "hc_mult": 2,
        "hc_sinkhorn_iters": 2,
        "num_nextn_predict_layers": 0,
        "layer_types": [
            "heavily_compressed_attention",
            "compressed_sparse_attention",
            "heavily_compressed_attention",
        ],
        "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        "mlp_layer_types": ["hash_moe", "moe", "moe"],
    },
    "doge": {
        # Product-key retrieval experts: num_experts must be a perfect square (16 = 4 x 4 keys).
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 32,
        "is_moe": True,
        "num_experts": 16,
        "num_experts_per_tok": 2,
        "keep_window_size": 16,
    },
    "dots1": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        **_DS_MOE,
        "first_k_dense_replace": 1,
        "sliding_window": 16,
        "max_window_layers": 3,
        "layer_types": ["full_attention"] * 3,
    },
    "dots3_note": {
        "_no_base": True,
        "text_config": "dots3_note_text",
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "moe_intermediate_size": 16,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "adapter_in_dim": 32,
            "adapter_out_dim": 64,
            "mlp_layer_types": ["dense"],
        },
        "audio_config": {
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "downsample_hidden_size": 16,
            "adapter_input_size": 32,
            "adapter_out_dim": 64,
        },
    },
    "dots3_note_text": {
        # sliding-window layers require head_dim == qk_nope_head_dim + qk_rope_head_dim (24)
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        **_INDEXER,
        "head_dim": 24,
        "shared_experts_intermediate_size": 32,
        "sliding_window": 16,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["indexed_attention", "sliding_attention", "sliding_attention"],
        # the default per-layer overrides (layers "02", "03", ...) re-inflate the attention sizes
        "per_layer_config": {},
    },
    "ernie4_5_moe": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "moe_num_experts": 8,
        "moe_k": 2,
        "moe_num_shared_experts": 1,
        "moe_layer_start_index": 1,
        "moe_layer_end_index": 2,
        "moe_layer_interval": 1,
    },
    "exaone_moe": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "flex_olmo": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    },
    "flint": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [0],
        "sliding_window": 16,
        "layer_types": ["full_attention", "sliding_attention", "full_attention"],
    },
    "gemma4": {
        "_no_base": True,
        "text_config": "gemma4_text",
        "vision_config": None,
        "audio_config": None,
    },
    "gemma4_text": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 64,
        "hidden_size_per_layer_input": 16,
        "vocab_size_per_layer_input": 128,
        "enable_moe_block": True,
        "num_experts": 8,
        "top_k_experts": 2,
        "moe_intermediate_size": 24,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "global_head_dim": 32,
    },
    "glm4_moe": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        **_DS_MOE,
        "first_k_dense_replace": 1,
    },
    "glm4_moe_lite": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "glm_moe_dsa": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        **_INDEXER,
        "first_k_dense_replace": 1,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["indexed_attention"] * 3,
        "indexer_types": ["full"] * 3,
    },
    "gpt_oss": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    },
    "granitemoe": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
    "granitemoe_swa": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "shared_intermediate_size": 32,
        "sliding_window": 16,
        "layer_types": ["full_attention", "sliding_attention"],
        "layer_rope_theta": [10000.0, 10000.0],
    },
    "granitemoehybrid": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "shared_intermediate_size": 32,
        "layer_types": ["linear_attention", "full_attention", "linear_attention"],
        "mamba_n_heads": 8,
        "mamba_n_groups": 1,
        "mamba_d_state": 8,
        "mamba_d_head": 16,
        "mamba_chunk_size": 16,
    },
    "granitemoeshared": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "shared_intermediate_size": 32,
    },
    "hunyuan_v1_moe": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 24,
        "num_experts": 8,
        "moe_topk": 2,
    },
    "hy_v3": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_shared_experts": 1,
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "hy_v4": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        **_DS_MOE,
        **_INDEXER,
        "head_dim": 16,
        "hc_mult": 2,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["indexed_attention"] * 3,
        "indexer_types": ["full", "shared", "shared"],
    },
    "inkling2_text": {
        "num_hidden_layers": 2,
        **_GQA,
        "unpadded_vocab_size": 128,
        "swa_num_attention_heads": 4,
        "swa_num_key_value_heads": 2,
        "swa_head_dim": 16,
        "sliding_window_size": 16,
        "rel_extent": 32,
        "log_scaling_n_floor": 64,
        "moe_intermediate_size": 24,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_layers_per_attn_res_block": 1,
        "layer_types": ["hybrid_sliding", "hybrid"],
    },
    "inkling_text": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "swa_num_attention_heads": 4,
        "swa_num_key_value_heads": 2,
        "swa_head_dim": 16,
        "sliding_window_size": 16,
        "rel_extent": 32,
        "moe_intermediate_size": 24,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "layer_types": ["hybrid_sliding", "hybrid_sliding", "hybrid"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "jamba": {
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "expert_layer_period": 2,
        "expert_layer_offset": 1,
        "attn_layer_period": 2,
        "attn_layer_offset": 0,
        "use_mamba_kernels": False,
        "mamba_d_state": 8,
        "mamba_dt_rank": 8,
    },
    "jetmoe": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "kv_channels": 16,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
    "kimi_linear": {
        "num_hidden_layers": 3,
        "intermediate_size": 64,
        **_MLA,
        "q_lora_rank": None,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_shared_experts": 1,
        "num_experts_per_token": 2,
        "num_expert_group": 1,
        "topk_group": 1,
        "linear_head_dim": 16,
        "linear_num_heads": 4,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["linear_attention", "full_attention", "linear_attention"],
    },
    "kolibri1": {
        "num_hidden_layers": 2,
        **_GQA,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "laguna": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
        "layer_types": ["full_attention", "sliding_attention", "full_attention"],
        "num_attention_heads_per_layer": [4, 4, 4],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "lfm2_moe": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_dense_layers": 1,
        "layer_types": ["conv", "full_attention", "conv"],
    },
    "llama4": {
        "_no_base": True,
        "text_config": "llama4_text",
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vision_output_dim": 32,
            "image_size": 28,
            "patch_size": 14,
            "projector_input_dim": 32,
            "projector_output_dim": 32,
        },
    },
    "llama4_text": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 24,
        "intermediate_size_mlp": 64,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "moe_layers": [1, 2],
        "no_rope_layers": [1, 1, 0],
        "attention_chunk_size": 16,
        "floor_scale": 16,
        "layer_types": ["chunked_attention", "chunked_attention", "full_attention"],
    },
    "longcat_flash": {
        # 8 routed + 2 zero-computation (identity) experts; each layer has 2 attn + 2 dense MLP
        # sublayers plus a shortcut MoE.
        "num_layers": 2,
        "num_key_value_heads": 4,
        "ffn_hidden_size": 64,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "head_dim": 8,
        "v_head_dim": 16,
        "moe_topk": 2,
        "n_routed_experts": 8,
        "zero_expert_num": 2,
        "expert_ffn_hidden_size": 24,
    },
    "mellum": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
        "layer_types": ["full_attention", "sliding_attention", "full_attention"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "mimo_v2_flash": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "v_head_dim": 16,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "sliding_window": 16,
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
        "mlp_layer_types": _DENSE_SPARSE_3,
    },
    "minimax": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "block_size": 16,
        "layer_types": ["linear_attention", "full_attention"],
    },
    "minimax_m2": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
    "minimax_m3_vl_text": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 24,
        "dense_intermediate_size": 64,
        "shared_intermediate_size": 32,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "rotary_dim": 8,
        "index_n_heads": 2,
        "index_head_dim": 16,
        "index_block_size": 4,
        "index_topk_blocks": 2,
        "mlp_layer_types": _DENSE_SPARSE_3,
        "layer_types": ["full_attention"] * 3,
    },
    "mixtral": {
        "num_hidden_layers": 2,
        **_GQA,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
    "nemotron_h": {
        "layers_block_type": ["linear_attention", "moe", "full_attention", "moe"],
        **_GQA,
        "intermediate_size": 64,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 24,
        "moe_shared_expert_intermediate_size": 32,
        "use_mamba_kernels": False,
        "ssm_state_size": 8,
        "mamba_num_heads": 8,
        "mamba_head_dim": 16,
        "n_groups": 1,
        "chunk_size": 16,
    },
    "olmoe": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    },
    "phimoe": {
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 24,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
    "qwen2_moe": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "mlp_only_layers": [0],
    },
    "qwen3_5_moe": {
        "_no_base": True,
        "text_config": "qwen3_5_moe_text",
        "vision_config": {
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 64,
        },
    },
    "qwen3_5_moe_text": {
        "num_hidden_layers": 2,
        **_GQA,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "layer_types": ["linear_attention", "full_attention"],
    },
    "qwen3_moe": {
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "mlp_only_layers": [0],
    },
    "qwen3_next": {
        "num_hidden_layers": 3,
        **_GQA,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "mlp_only_layers": [0],
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "layer_types": ["linear_attention", "full_attention", "linear_attention"],
    },
    "qwen4_exp": {
        "_no_base": True,
        "text_config": "qwen4_exp_text",
        "vision_config": {
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 64,
        },
    },
    "qwen4_exp_text": {
        "num_hidden_layers": 2,
        **_GQA,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "hc_count": 2,
        "hc_lowrank": 8,
        "ple_embed_dim": 16,
        "heads_per_ngram": 2,
        "ngram_vocab_size_base": 256,
        "make_ngram_vocab_size_divisible_by": 8,
        "split_ngram_parts": 4,
        "indexer_n_heads": 2,
        "indexer_kv_heads": 1,
        "indexer_head_dim": 16,
        "indexer_budget": 8,
        "indexer_compress_ratio": 4,
        "layer_types": ["linear_attention", "indexed_attention"],
    },
    "solar_open": {
        "num_hidden_layers": 2,
        **_GQA,
        "moe_intermediate_size": 24,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
    },
    "zaya": {
        # Zaya validates num_experts_per_tok == 1 (its router adds a "skip" class).
        "num_hidden_layers": 2,
        **_GQA,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 1,
        "router_hidden_size": 16,
    },
}

#: Dense control architectures (plain MLP, no experts).
DENSE_MODEL_TYPES: list[str] = ["llama", "mistral"]

#: MoE model types that cannot be built and run tiny here, with the reason.
EXCLUDED: dict[str, str] = {}

#: Every MoE causal-LM model_type (in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) that builds tiny.
MOE_MODEL_TYPES: list[str] = sorted(
    t for t in _TINY_CONFIGS if t not in DENSE_MODEL_TYPES and t not in EXCLUDED
)


def _text_kwargs(model_type: str) -> dict[str, Any]:
    """Return the merged (base + per-type) kwargs of a non-composite tiny config."""
    spec = dict(_TINY_CONFIGS[model_type])
    no_base = spec.pop("_no_base", False)
    merged: dict[str, Any] = {} if no_base else dict(_BASE)
    merged.update(spec)
    return merged


def tiny_config(model_type: str, **overrides: Any) -> PretrainedConfig:
    """Build the tiny config registered for ``model_type``.

    Args:
        model_type: A key of :data:`MOE_MODEL_TYPES` or :data:`DENSE_MODEL_TYPES`.
        **overrides: Config fields applied last. For composite configs they go to the
            text sub-config, except keys that only exist on the top-level config
            (e.g. ``vision_config``).

    Returns:
        The instantiated ``PretrainedConfig``.

    Raises:
        KeyError: If ``model_type`` has no tiny config.
    """
    if model_type not in _TINY_CONFIGS:
        raise KeyError(f"no tiny config for model_type {model_type!r}")
    kwargs = _text_kwargs(model_type)
    text_type = kwargs.get("text_config")
    if isinstance(text_type, str):
        text_kwargs = _text_kwargs(text_type)
        top_keys = set(AutoConfig.for_model(model_type).to_dict()) - {"text_config"}
        for key, value in overrides.items():
            if key in top_keys and key not in text_kwargs:
                kwargs[key] = value
            else:
                text_kwargs[key] = value
        kwargs["text_config"] = AutoConfig.for_model(text_type, **text_kwargs).to_dict()
        return AutoConfig.for_model(model_type, **kwargs)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, **overrides: Any) -> PreTrainedModel:
    """Build the tiny causal LM for ``model_type`` (seed 0, fp32, CPU, eval mode).

    Args:
        model_type: A key of :data:`MOE_MODEL_TYPES` or :data:`DENSE_MODEL_TYPES`.
        **overrides: Config fields forwarded to :func:`tiny_config`.

    Returns:
        ``AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides))``.
    """
    cfg = tiny_config(model_type, **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.to("cpu").eval()
