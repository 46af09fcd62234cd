"""bfloat16 where it pays, float32 where it does not.

Native bf16 matrix multiplies exist on CUDA GPUs that support them and on CPUs with AVX512-BF16 or
AMX. Elsewhere (AVX2-only CPUs) torch emulates bf16 far slower than float32: 0.8 vs 102 GFLOPS for a
1024x1024 matmul on a 2-core AVX2 machine here, and vLLM's CPU engine generated 30 vs 116 tokens/s.
So every ``auto`` precision setting in ahalab (the default) resolves to bf16 only on native hardware.
"""
from __future__ import annotations

from ahalab.errors import UserError

CPU_BF16_FEATURES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` ("cpu" or "cuda...") multiplies bf16 matrices natively."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(getattr(torch.cpu, name, lambda: False)() for name in CPU_BF16_FEATURES)


def use_bf16(setting: bool | str, device: str = "cpu") -> bool:
    """A ``bf16`` option (true, false or "auto") resolved for ``device``."""
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        return native_bf16(device)
    raise UserError(f"bf16 must be true, false or auto (got {setting!r})")


def auto_dtype(device: str = "cpu") -> str:
    """The engine dtype ``auto`` stands for on ``device``: bfloat16 where native, else float32."""
    return "bfloat16" if native_bf16(device) else "float32"
