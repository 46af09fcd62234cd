"""Pushing a finished run to the Hugging Face hub: ``push_to_hub``, ``hub_model_id`` and ``hub_private_repo``, the
names of transformers' and TRL's TrainingArguments (``hub_dataset_id`` for ``ahalab data``).

    push_run(run, summary, run.file("model"), repo_id=cfg.hub_model_id, private=cfg.hub_private_repo, what="sft run")

The push comes after the run saved everything (model and card, or dataset and card, and summary.json), so a hub
failure loses nothing: ``push_run`` records what happened under ``hub`` in summary.json (repo_id, url, commit_url,
error) and then raises HubPushError, which the CLI reports with the saved folder and how to push it again.
Only the main process (RANK 0, or no RANK) pushes. The token is huggingface_hub's own ($HF_TOKEN or
``hf auth login``): no config key holds one, since configs are written to config.yaml, checkpoints and trackers.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ahalab.errors import UserError
from ahalab.runs import RunDir

log = logging.getLogger(__name__)

RepoType = Literal["model", "dataset"]
HUB_KEYS = frozenset({"push_to_hub", "hub_model_id", "hub_dataset_id", "hub_private_repo"})  # change no result


class HubPushError(UserError):
    """The push failed after the run was saved; summary.json records the error."""


def is_main_process() -> bool:
    """Whether this process pushes: rank 0 of a distributed launch (torchrun and accelerate set RANK), or alone."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def check_hub(push: bool, repo_id: str | None, key: str = "hub_model_id") -> None:
    """Before a run starts: UserError unless a push at its end can work (a valid repo id, the hub client not in
    offline mode, a token to write with). Nothing to check without ``push``."""
    if not push:
        return
    from huggingface_hub import get_token, is_offline_mode
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id is not None:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as e:
            raise UserError(f"{key} {repo_id!r} is not a hub repo id ('name' or 'owner/name'): {e}") from None
    if is_offline_mode():
        raise UserError("push_to_hub: the hub client is in offline mode (HF_HUB_OFFLINE is set); unset it, or set "
                        "push_to_hub=false")
    if get_token() is None:
        raise UserError("push_to_hub needs a Hugging Face token with write access: set HF_TOKEN or run "
                        "`hf auth login`")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, repo_type: RepoType = "model",
                commit_message: str, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """Create ``repo_id`` (kept as it is if it exists) and upload ``folder`` to it as one commit. Returns
    {"repo_id" (with its owner, as the hub names it), "repo_type", "url", "commit_url", "error"}: a failure is
    not raised but returned in "error" (None when the push worked)."""
    from huggingface_hub import HfApi

    result: dict[str, Any] = {"repo_id": repo_id, "repo_type": repo_type, "url": None, "commit_url": None,
                              "error": None}
    try:
        api = HfApi()
        url = api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
        result.update(repo_id=url.repo_id, url=str(url))
        commit = api.upload_folder(repo_id=url.repo_id, folder_path=folder, repo_type=repo_type,
                                   commit_message=commit_message, ignore_patterns=list(ignore))
        result["commit_url"] = commit.commit_url
    except Exception as e:  # whatever failed (HTTP, network, validation), the folder is saved: report, don't lose it
        result["error"] = _one_line(e)
        log.error("push of %s to the hub (%s %s) failed: %s", folder, repo_type, result["repo_id"], result["error"])
    return result


def push_run(run: RunDir, summary: dict[str, Any], folder: str | Path, *, repo_id: str | None,
             private: bool | None = None, repo_type: RepoType = "model", what: str = "run",
             ignore: Sequence[str] = ()) -> dict[str, Any] | None:
    """Push ``folder`` (saved by ``run``, e.g. its model/) to the hub: to ``repo_id``, by default the run directory's
    name, with a commit message naming the run (``what``: e.g. "grpo run"). Records the result as ``summary["hub"]``
    in the run's summary.json; HubPushError when the push failed. Returns the result (None: not the main process)."""
    if not is_main_process():
        return None
    name = run.path.resolve().name
    folder = Path(folder)
    result = push_folder(folder, repo_id or name, private=private, repo_type=repo_type, ignore=ignore,
                         commit_message=f"ahalab {what} {name}")
    summary["hub"] = result
    run.write_json("summary.json", summary)
    if result["error"]:
        flags = (" --repo-type dataset" if repo_type == "dataset" else "") + (" --private" if private else "") \
            + "".join(f" --exclude {pattern}" for pattern in ignore)
        raise HubPushError(f"push to the hub failed ({result['error']}). Nothing is lost: {folder} is saved and "
                           f"{run.file('summary.json')} records the error. Push it again with: "
                           f"hf upload {result['repo_id']} {folder} .{flags}")
    print(f"pushed {folder} to {result['url']} ({result['commit_url']})", flush=True)
    return result
