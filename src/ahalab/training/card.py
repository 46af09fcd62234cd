"""Model cards: the README.md (YAML front matter the Hugging Face hub renders, then a body) of a trained model."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

# the settings a card lists, where the config has them
KEY_SETTINGS = ("lr", "lr_schedule", "warmup_steps", "steps", "max_steps", "epochs", "batch_size", "prompts_per_step",
                "generations", "loss", "beta", "epsilon", "mu", "temperature", "max_new_tokens", "max_seq_len",
                "lora_r", "seed")
METHODS = {"grpo": "GRPO (reinforcement learning with rule rewards)", "sft": "supervised fine-tuning"}


def ahalab_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ahalab")
    except PackageNotFoundError:
        return "unknown"


def hub_id(name: str) -> str | None:
    """``name`` if it is a hub id (owner/name, not a local path), else None."""
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists():
        return name
    return None


def _datasets(config: dict[str, Any]) -> list[str]:
    """The training data a config names: SFT files, a task's data file or hub id, or the task itself."""
    if config.get("train"):
        return [str(f) for f in config["train"]]
    if config.get("data"):
        return [str(config["data"])]
    return [f"ahalab task {config['task']}"] if config.get("task") else []


def model_card(method: str, config: dict[str, Any], results: dict[str, Any] | None = None,
               command: list[str] | None = None) -> str:
    """README.md text for a model trained with ``method`` (grpo | sft) under ``config``; ``results``: held-out
    metric -> value; ``command``: what made it (default ``sys.argv``)."""
    base = str(config.get("model"))
    data = _datasets(config)
    front: dict[str, Any] = {"library_name": "transformers", "tags": ["ahalab", method, "reasoning"]}
    if hub_id(base):
        front["base_model"] = base
    hub_data = [d for d in data if hub_id(d)]
    if hub_data:
        front["datasets"] = hub_data
    settings = {k: config[k] for k in KEY_SETTINGS if config.get(k) is not None}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {base} + {method.upper()} (ahalab)", "",
             f"- **Base model:** `{base}`", f"- **Method:** {METHODS.get(method, method)}",
             f"- **Data:** {', '.join(f'`{d}`' for d in data) or 'n/a'}"]
    if config.get("task"):
        fmt = f", format `{config['format']}`" if config.get("format") else ""
        lines.append(f"- **Task:** `{config['task']}`{fmt}")
    if config.get("rewards"):
        lines.append("- **Rewards:** " + ", ".join(f"`{k}` x {v}" for k, v in config["rewards"].items()))
    lines += ["", "## Key settings", "", "| setting | value |", "|---|---|",
              *(f"| {k} | {v} |" for k, v in settings.items()), ""]
    if results:
        lines += ["## Held-out results", "", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results.items()), ""]
    lines += ["## Provenance", "", f"Trained with ahalab {ahalab_version()}:", "", "```",
              shlex.join(command if command is not None else ["ahalab", *sys.argv[1:]]), "```", ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, method: str, config: dict[str, Any],
                     results: dict[str, Any] | None = None) -> Path:
    """Write (or rewrite, once results are known) ``model_dir``/README.md."""
    from ahalab.runs import atomic_write_text

    path = Path(model_dir) / "README.md"
    atomic_write_text(path, model_card(method, config, results))
    return path
