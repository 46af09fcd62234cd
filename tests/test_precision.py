"""bf16 "auto": autocast and the vLLM dtype follow native bf16 support; bad values name the choices."""
import pytest
import torch

from ahalab import precision
from ahalab.config import from_dict
from ahalab.errors import UserError
from ahalab.rl.config import ZeroConfig
from ahalab.sft.config import SFTConfig


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_support(monkeypatch, native) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": native)
    assert precision.use_bf16("auto") is native
    assert precision.auto_dtype() == ("bfloat16" if native else "float32")
    assert precision.use_bf16(True) is True and precision.use_bf16(False) is False


def test_cpu_detection_reads_torch_cpu_features(monkeypatch) -> None:
    for name in precision.CPU_BF16_FEATURES:
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert precision.native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16("cpu") is True


@pytest.mark.parametrize("cls,extra", [(ZeroConfig, {}), (SFTConfig, {"train": ["x.jsonl"]})])
def test_configs_take_true_false_auto_and_reject_others(cls, extra) -> None:
    assert cls().bf16 == "auto"
    for value in (True, False, "auto"):
        cfg = from_dict(cls, {"bf16": value, **extra})
        cfg.validate()
        assert cfg.bf16 == value
    with pytest.raises(UserError, match="bf16: 'ture' is not one of true, false, auto"):
        from_dict(cls, {"bf16": "ture", **extra}).validate()
