"""push_to_hub: zero, sft and data runs upload what they saved, through huggingface_hub's real client, to a fake hub
answering at the HTTP transport (no internet here: never against the real hub); a failing hub keeps the run."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx2
import pytest
import yaml

from ahalab.cli import main
from ahalab.errors import UserError

ENDPOINT = "http://hub.test"
TOKEN = "hf_fake_write_token"
OWNER = "alice"  # whose namespace a repo id without one lands in


class FakeHub:
    """The hub API huggingface_hub's upload path calls: repo creation, the README metadata check, preupload (every
    file "regular": its bytes travel base64 in the commit) and the NDJSON commit. ``fail`` maps one of "create",
    "preupload", "commit" to the HTTP status that endpoint answers."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.posts: list[tuple[str, dict[str, str], bytes]] = []  # (path, headers, body)
        self.created: list[dict] = []
        self.commits: list[dict] = []  # {"repo": "models/alice/x", "header": {...}, "files": {path: bytes}}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method != "POST":
            return httpx2.Response(404, json={"error": "not served by the fake hub"})
        self.posts.append((path, dict(request.headers), request.content))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx2.Response(401, json={"error": "Invalid credentials in Authorization header"})
        endpoint = "create" if path == "/api/repos/create" else path.split("/")[-2]
        if endpoint in self.fail:
            return httpx2.Response(self.fail[endpoint], json={"error": f"fake hub: {endpoint} refused"})
        body = request.content
        if endpoint == "create":
            repo = json.loads(body)
            self.created.append(repo)
            prefix = "datasets/" if repo.get("type") == "dataset" else ""
            owner = repo["organization"] or OWNER
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/{prefix}{owner}/{repo['name']}"})
        if path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            try:
                assert content.startswith("---\n")
                assert isinstance(yaml.safe_load(content.split("---\n")[1]), dict)
            except (AssertionError, IndexError, yaml.YAMLError):
                return httpx2.Response(400, json={"errors": [{"message": "bad metadata"}], "warnings": []})
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if endpoint == "preupload":
            files = json.loads(body)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if endpoint == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines()]
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            repo = path.removeprefix("/api/").rsplit("/commit/", 1)[0]
            self.commits.append({"repo": repo, "header": lines[0]["value"], "files": files})
            url = f"{ENDPOINT}/{repo.removeprefix('models/')}/commit/c0ffee"
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": "c0ffee"})
        return httpx2.Response(404, json={"error": "not served by the fake hub"})

    def endpoints(self) -> list[str]:
        return [p for p, _, _ in self.posts]


@pytest.fixture
def hub(monkeypatch, tmp_path) -> FakeHub:
    """huggingface_hub pointed at http://hub.test, its HTTP transport answered by a FakeHub, a token in HF_TOKEN."""
    import huggingface_hub

    fake = FakeHub()
    monkeypatch.setattr(httpx2.HTTPTransport, "handle_request",
                        lambda self, request: httpx2.MockTransport(fake).handle_request(request))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", ENDPOINT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("RANK", raising=False)
    return fake


def local_files(folder: Path, leave_out: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in leave_out}


def tiny_dataset(tmp_path: Path) -> str:
    from ahalab.data.build import DataConfig, build_dataset

    built = build_dataset(DataConfig(task="countdown", limit=12, journey="search", out=str(tmp_path / "data")))
    return built["shortcut"]


def zero_args(model: str, out: Path) -> list[str]:
    return ["zero", "--model", model, "--engine", "hf", "--steps", "1", "--prompts-per-step", "2", "--generations", "2",
            "--max-new-tokens", "4", "--threads", "1", "--out", str(out), "train_size=20", "eval.every=0",
            "eval.limit=0", "checkpoint_every=0", "sample_every=0", "rewards={language: 1.0}"]


def test_sft_pushes_its_model_and_card(tiny_model, hub, tmp_path):
    data = tiny_dataset(tmp_path)
    out = tmp_path / "sft-cd"
    rc = main(["sft", "--model", tiny_model, "--train", data, "--max-steps", "1", "--out", str(out), "--push-to-hub",
               "--hub-private-repo", "batch_size=4", "threads=1"])
    assert rc == 0
    # the default repo id is the run directory's name, created private in the token's namespace, then filled
    assert hub.created == [{"name": "sft-cd", "organization": None, "visibility": "private", "type": "model"}]
    assert hub.endpoints() == ["/api/repos/create", "/api/validate-yaml", "/api/models/alice/sft-cd/preupload/main",
                               "/api/models/alice/sft-cd/commit/main"]
    assert all(headers["authorization"] == f"Bearer {TOKEN}" for _, headers, _ in hub.posts)
    [commit] = hub.commits
    model_dir = out / "model"
    assert commit["files"] == local_files(model_dir)  # every file, byte for byte
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(commit["files"])
    assert b"library_name: transformers" in commit["files"]["README.md"]  # the model card
    assert commit["header"]["summary"] == "ahalab sft run sft-cd"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hub"] == {"repo_id": "alice/sft-cd", "repo_type": "model", "url": f"{ENDPOINT}/alice/sft-cd",
                              "commit_url": f"{ENDPOINT}/alice/sft-cd/commit/c0ffee", "error": None}
    assert summary["steps"] == 1  # the rest of the summary is still there


def test_data_pushes_the_dataset_and_its_card_but_not_its_log(hub, tmp_path):
    out = tmp_path / "cd-data"
    rc = main(["data", "--task", "countdown", "--journey", "search", "--limit", "12", "--out", str(out),
               "--push-to-hub", "--hub-dataset-id", "team/cd-data"])
    assert rc == 0
    assert hub.created == [{"name": "cd-data", "organization": "team", "type": "dataset"}]  # no visibility: default
    [commit] = hub.commits
    assert commit["repo"] == "datasets/team/cd-data" and commit["header"]["summary"] == "ahalab data run cd-data"
    assert (out / "log.txt").exists() and "log.txt" not in commit["files"]
    pushed = local_files(out, leave_out=("log.txt", "summary.json"))  # summary.json has the hub result since
    assert {k: v for k, v in commit["files"].items() if k != "summary.json"} == pushed
    assert {"README.md", "journey.jsonl", "shortcut.jsonl", "summary.json"} <= set(commit["files"])
    assert b"configs:" in commit["files"]["README.md"]  # the dataset card's loader header
    hub_result = json.loads((out / "summary.json").read_text())["hub"]
    assert (hub_result["repo_id"], hub_result["url"], hub_result["error"]) == (
        "team/cd-data", f"{ENDPOINT}/datasets/team/cd-data", None)


@pytest.mark.parametrize("command, fail", [("zero", {"commit": 401}), ("data", {"create": 500})])
def test_a_failing_hub_keeps_the_run_records_the_error_and_exits_non_zero(tiny_model, hub, tmp_path, capsys,
                                                                          command, fail):
    hub.fail = fail
    out = tmp_path / "run"
    if command == "zero":
        args, saved, kept = zero_args(tiny_model, out), out / "model", ("config.json", "model.safetensors", "README.md")
        retry = f"hf upload alice/run {saved} ."  # the repo was made: its full id
    else:
        args, saved, kept = ["data", "--task", "countdown", "--journey", "search", "--limit", "12", "--out",
                             str(out)], out, ("shortcut.jsonl", "journey.jsonl", "README.md")
        retry = f"hf upload run {saved} . --repo-type dataset --exclude log.txt"
    assert main([*args, "--push-to-hub"]) == 2
    assert all((saved / name).stat().st_size > 0 for name in kept)  # the run's results are saved
    status = next(iter(fail.values()))
    error = json.loads((out / "summary.json").read_text())["hub"]["error"]
    assert error.startswith("HfHubHTTPError") and str(status) in error
    message = capsys.readouterr().err
    assert f"ahalab {command}: error: push to the hub failed" in message and str(status) in message
    assert retry in message  # how to push it again
    if command == "zero":  # the repo was made, the commit refused
        assert hub.endpoints()[-1] == "/api/models/alice/run/commit/main" and hub.commits == []
    else:  # nothing after the refused creation
        assert hub.endpoints() == ["/api/repos/create"]


def test_push_settings_are_checked_before_anything_runs(hub, monkeypatch, tmp_path):
    import huggingface_hub

    from ahalab.config import load_config
    from ahalab.data.build import DataConfig
    from ahalab.rl.config import ZeroConfig
    from ahalab.sft.config import SFTConfig

    load_config(SFTConfig, overrides=["train=[a.jsonl]", "push_to_hub=true", "hub_model_id=me/sft-1"])
    with pytest.raises(UserError, match="hub_model_id 'a/b/c' is not a hub repo id"):
        load_config(ZeroConfig, overrides=["push_to_hub=true", "hub_model_id=a/b/c"])
    with pytest.raises(UserError, match="hub_dataset_id"):
        load_config(DataConfig, overrides=["push_to_hub=true", "hub_dataset_id=no spaces"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="offline mode"):
        load_config(ZeroConfig, overrides=["push_to_hub=true"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(UserError, match="needs a Hugging Face token"):
        load_config(DataConfig, overrides=["push_to_hub=true"])
    load_config(ZeroConfig, overrides=["hub_model_id=a/b/c"])  # not pushing: nothing to check
    assert hub.posts == []


def test_recipe_stages_take_the_hub_settings_without_changing_their_hash(hub, tmp_path):
    from ahalab.pipeline import check_wiring, load_recipe, plan

    recipe = Path(__file__).parent.parent / "recipes" / "r1.yaml"
    push = ["zero.push_to_hub=true", "zero.hub_model_id=me/r1-zero", "cold_start.push_to_hub=true",
            "sft_cold.push_to_hub=true", "sft_cold.hub_private_repo=true"]
    _, stages = load_recipe(recipe, push)
    check_wiring(stages, recipe)  # every stage's config built and validated
    zero = next(s for s in stages if s.name == "zero")
    assert (zero.config["push_to_hub"], zero.config["hub_model_id"]) == (True, "me/r1-zero")
    _, plain = load_recipe(recipe)
    # pushing changes no result: a finished stage is not redone for it, and a failed push resumes its stage
    assert [p.hash for p in plan(stages, tmp_path)] == [p.hash for p in plan(plain, tmp_path)]
    _, bad = load_recipe(recipe, ["sft_cold.push_to_hub=true", "sft_cold.hub_model_id=a/b/c"])
    with pytest.raises(UserError, match="hub_model_id 'a/b/c'"):
        check_wiring(bad, recipe)
    assert hub.posts == []


def test_only_the_main_process_pushes(hub, monkeypatch, tmp_path):
    from ahalab.runs import RunDir
    from ahalab.training.hub import push_run

    run = RunDir(tmp_path / "run")
    (run.path / "model").mkdir()
    (run.path / "model" / "config.json").write_text("{}")
    monkeypatch.setenv("RANK", "1")
    assert push_run(run, {"steps": 1}, run.path / "model", repo_id="me/m") is None
    assert hub.posts == [] and not run.file("summary.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert push_run(run, {"steps": 1}, run.path / "model", repo_id="me/m")["error"] is None
    assert hub.commits[0]["files"] == {"config.json": b"{}"}
    assert json.loads(run.file("summary.json").read_text())["hub"]["repo_id"] == "me/m"
