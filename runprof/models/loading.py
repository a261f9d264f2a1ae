"""Loading models and tokenizers: the shipped tiny model, local directories, the hub cache, random init."""
from __future__ import annotations

import torch

from ..errors import InvalidArgumentError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_dtype(text: str | None) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``; ``"auto"``/``None`` -> ``None`` (the checkpoint's own dtype)."""
    if text in (None, "auto"):
        return None
    try:
        return _DTYPES[text]
    except KeyError:
        raise InvalidArgumentError(f"dtype {text!r}: expected one of auto, {', '.join(_DTYPES)}") from None
