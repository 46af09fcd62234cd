"""Recipes end to end on the tiny model: an R1-shaped pipeline (RL -> data -> SFT -> RL -> report) that skips
finished stages, survives kill -9 with the same final metrics, and `ahalab report` over its runs."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ahalab.errors import UserError
from ahalab.pipeline import run_recipe

RECIPES = Path(__file__).parents[1] / "recipes"

TINY_R1 = """
stages:
  - name: zero
    kind: zero
    config: &rl
      model: {model}
      engine: hf
      steps: 3
      prompts_per_step: 2
      generations: 4
      max_new_tokens: 8
      train_size: 50
      rewards: {{language: 1.0, repetition: 1.0}}
      lr: 1.0e-2
      threads: 1
      eval: {{every: 3, limit: 4, max_tokens: 8}}
      checkpoint_every: 1
      sample_every: 0
      seed: 3
  - name: data
    kind: distill_data
    config: {{task: arithmetic, limit: 12, teacher: program, model: {model}}}
  - name: sft
    kind: sft
    config: {{model: "${{zero.model}}", train: ["${{data.train}}"], epochs: 1, batch_size: 4, lr: 1.0e-3,
             bf16: false, threads: 1, checkpoint_every: 0}}
  - name: rl_final
    kind: zero
    config: {{<<: *rl, model: "${{sft.model}}", steps: 4}}
  - name: report
    kind: report
    config: {{runs: [base={model}, "zero=${{zero.model}}", "final=${{rl_final.model}}"], limit: 4, samples: 2,
             max_tokens: 8, engine: hf}}
"""


def _tiny_recipe(tmp_path: Path, model: str) -> Path:
    f = tmp_path / "tiny_r1.yaml"
    f.write_text(TINY_R1.format(model=model))
    return f


def _states(lines: list[str]) -> list[str]:
    """The plan's state of each stage (done, resume, run, redo) from the runner's log lines."""
    return [re.search(r": (done|resume|run|redo)(?:;|$)", line).group(1) for line in lines]


def _series(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")}
            for line in path.read_text().splitlines()]


def _accuracies(run: Path) -> list[dict]:
    rows = json.loads((run / "05-report" / "summary.json").read_text())["rows"]
    return [{k: r[k] for k in ("run", "greedy", "maj@2", "mean tokens")} for r in rows]


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml") if "stages:" in p.read_text()))
def test_shipped_recipes_pass_the_dry_run(recipe: str, tmp_path) -> None:
    lines: list[str] = []
    run_recipe(RECIPES / recipe, tmp_path / "run", dry_run=True, log=lines.append)
    assert lines and set(_states(lines)) == {"run"}


def test_dry_run_names_an_unknown_stage_config_key(tmp_path) -> None:
    with pytest.raises(UserError, match=r"stage 'zero' \(zero\): unknown config key\(s\) stepz; valid: .*steps"):
        run_recipe(RECIPES / "r1.yaml", tmp_path / "run", ["zero.stepz=3"], dry_run=True, log=lambda s: None)


def _run_cli(recipe: Path, out: Path) -> subprocess.Popen:
    """``ahalab run`` in a fresh process: both runs compared below get the same torch threading (a process
    that has started vLLM keeps its thread binding, which changes float sums)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "ahalab.cli", "run", str(recipe), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_tiny_r1_pipeline_skips_resumes_after_kill_and_reports(tiny_model, tmp_path) -> None:
    recipe = _tiny_recipe(tmp_path, tiny_model)
    full = tmp_path / "full"
    assert _run_cli(recipe, full).wait(timeout=300) == 0
    assert (full / "04-rl_final" / "model" / "config.json").exists()
    meta = json.loads((full / "04-rl_final" / "stage.json").read_text())
    assert meta["status"] == "done" and meta["reads"] == ["sft"]

    # a re-run skips every stage
    lines: list[str] = []
    run_recipe(recipe, full, log=lines.append)
    assert _states(lines) == ["done"] * 5

    # kill -9 in the middle of the final RL stage, then run again: same final metrics
    killed = tmp_path / "killed"
    proc = _run_cli(recipe, killed)
    deadline = time.time() + 240
    while not (killed / "04-rl_final" / "checkpoints" / "step-000002").exists() and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the recipe ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = []
    run_recipe(recipe, killed, dry_run=True, log=lines.append)
    assert _states(lines) == ["done", "done", "done", "resume", "run"]
    assert _run_cli(recipe, killed).wait(timeout=300) == 0
    assert _series(killed / "04-rl_final" / "metrics.jsonl") == _series(full / "04-rl_final" / "metrics.jsonl")
    assert _accuracies(killed) == _accuracies(full)

    # the comparison: one row per model, training time summed over the stages a model was built from
    rows = json.loads((full / "05-report" / "summary.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["base", "zero", "final"]
    assert rows[0]["train s"] == 0 and 0 < rows[1]["train s"] == rows[1]["pipeline s"]
    assert rows[2]["pipeline s"] > rows[2]["train s"] + rows[1]["train s"]  # rl_final + sft + data + zero
    report = (full / "05-report" / "report.md").read_text()
    assert "maj@2" in report and "![accuracy](accuracy.png)" in report and "## Training curves" in report
    assert (full / "05-report" / "accuracy.png").stat().st_size > 0


def test_report_command_over_a_recipe_run_and_training_runs(tiny_model, tmp_path, capsys) -> None:
    from ahalab.cli import main
    from ahalab.report import discover

    run_recipe(_tiny_recipe(tmp_path, tiny_model), tmp_path / "r1", ["rl_final.steps=1", "zero.steps=1"],
               log=lambda s: None)
    args = ["report", f"base={tiny_model}", str(tmp_path / "r1"), f"sft_dir={tmp_path / 'r1' / '03-sft'}",
            "--limit", "3", "--samples", "2", "--max-tokens", "6", "--engine", "hf", "--out", str(tmp_path / "rep")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "rep" / "summary.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["base", "zero", "sft", "rl_final", "sft_dir"]
    assert [r["method"] for r in rows] == ["base model", "RL (GRPO)", "SFT", "RL (GRPO)", "SFT"]
    assert rows[2]["greedy"] == rows[4]["greedy"] and "rl_final" in printed
    assert list(rows[0])[:4] == ["run", "method", "greedy", "greedy vs base"]
    assert rows[0]["greedy vs base"] == "+0.000 [0.000, 0.000]"
    assert rows[2]["greedy vs base"] == rows[4]["greedy vs base"]
    ckpt = tmp_path / "r1" / "01-zero" / "checkpoints" / "step-000001"  # a checkpoint names its model too
    [entry] = discover(f"z1={ckpt}")
    assert (entry.label, entry.model, entry.method) == ("z1", str(ckpt / "model"), "RL (GRPO)") and entry.train_s > 0
    evals = sorted(p.name for p in (tmp_path / "rep" / "evals").iterdir())
    assert len(evals) == 10
    # the same report again: evaluations are reused, not redone
    stamp = {p: p.stat().st_mtime for p in (tmp_path / "rep" / "evals").rglob("summary.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime for p in (tmp_path / "rep" / "evals").rglob("summary.json")} == stamp
    assert main(args + ["--baseline", "zero"]) == 0  # evaluations reused, differences against another row
    assert "greedy vs zero" in json.loads((tmp_path / "rep" / "summary.json").read_text())["rows"][0]
    assert main(args + ["--baseline", "nobody"]) == 2
    assert main(args + ["--pair", "rl_final,sft", "--pair", "sft,sft_dir"]) == 0  # evaluations reused
    pairs = json.loads((tmp_path / "rep" / "summary.json").read_text())["pairs"]
    assert [(p["a"], p["b"]) for p in pairs] == [("rl_final", "sft"), ("sft", "sft_dir")]
    assert pairs[1]["difference"] == pairs[1]["low"] == pairs[1]["high"] == 0.0  # the same model twice
    assert "rl_final - sft" in (tmp_path / "rep" / "report.md").read_text()
    assert main(args + ["--pair", "rl_final,nobody"]) == 2
    assert main(args + ["--pair", "rl_final"]) == 2
    with pytest.raises(SystemExit):
        main(["report", "--samples", "2"])  # no RUN
    assert main(["report", str(tmp_path / "nothing-here"), "--engine", "hf", "--out", str(tmp_path / "x")]) == 2


def test_demo_tour_on_a_tiny_model(tiny_model, tmp_path, capsys) -> None:
    from ahalab.demo import main

    small = {"engine": "hf", "model": tiny_model}
    rl = {"engine": "hf", "steps": 1, "prompts_per_step": 2, "generations": 2, "max_new_tokens": 6, "train_size": 20,
          "eval.every": 1, "eval.limit": 3, "eval.max_tokens": 6, "threads": 1}
    overrides = {**{f"direct.{k}": v for k, v in {**small, "limit": 3, "max_tokens": 6}.items()},
                 **{f"scale.{k}": v for k, v in {**small, "limit": 3, "max_tokens": 6, "max_samples": 2,
                                                 "budgets": "[1, 2]", "seeds": 2}.items()},
                 **{f"zero.{k}": v for k, v in {**rl, "model": tiny_model}.items()},
                 "traces.limit": 8, "distill.model": tiny_model, "distill.batch_size": 4,
                 **{f"sft_rl.{k}": v for k, v in rl.items()},
                 "report.runs": f'[base={tiny_model}, "pure_rl=${{zero.model}}", "sft_rl=${{sft_rl.model}}"]',
                 "report.engine": "hf", "report.limit": 3, "report.samples": 2, "report.max_tokens": 6,
                 "report.pairs": "[[sft_rl, base], [pure_rl, sft_rl]]"}
    assert main(["--out", str(tmp_path / "demo"), *(f"{k}={v}" for k, v in overrides.items())]) == 0
    printed = capsys.readouterr().out
    assert "greedy, direct answer" in printed and "majority, chain of thought" in printed
    assert "The four approaches" in printed and "pure_rl" in printed and "maj@2" in printed
    assert "greedy vs base" in printed
    assert "What the numbers say" in printed and "sft_rl" in printed.split("What the numbers say")[1]
    assert (tmp_path / "demo" / "02-scale" / "accuracy_vs_tokens.png").exists()


def test_demo_closing_lines_say_what_won_and_what_to_look_at(tmp_path) -> None:
    from ahalab.demo import closing_lines
    from ahalab.runs import RunDir

    run = RunDir.create(str(tmp_path / "rl"), "zero", {"lr": 5e-6, "beta": 0.04})
    for step, flat in ((1, 0.5), (2, 1.0)):
        run.log_metrics(step, accuracy=0.25 * step, zero_std_groups=flat, time_step_s=90.0)
    out = {"sft_rl": {"summary": str(run.file("summary.json"))}}
    pairs = [{"a": "pure_rl", "b": "base", "difference": 0.3, "low": 0.2, "high": 0.4},
             {"a": "sft_rl", "b": "distilled", "difference": -0.01, "low": -0.05, "high": 0.03},
             {"a": "distilled", "b": "base", "difference": -0.2, "low": -0.3, "high": -0.1}]
    lines = closing_lines(pairs, out)
    assert lines[0] == "pure_rl beats base: +30.0 points, 95% interval +20.0 to +40.0."
    assert lines[1].startswith("sft_rl is not distinguishable from distilled on these problems: -1.0 points")
    assert "2 steps of GRPO at lr 5e-06, KL beta 0.04" in lines[2] and "75% of groups had all-equal rewards" in lines[2]
    assert "sampled accuracy 25% at the first step, 50% at the last" in lines[2]
    assert lines[3].startswith("distilled loses to base") and len(lines) == 4  # no stage directory: no note
    one = RunDir.create(str(tmp_path / "rl1"), "zero", {"lr": 5e-6})
    one.log_metrics(1, accuracy=0.5, zero_std_groups=1.0, time_step_s=80.0)
    note = closing_lines(pairs[1:2], {"sft_rl": {"summary": str(one.file("summary.json"))}})[1]
    assert "sft_rl: 1 step of GRPO at lr 5e-06; sampled accuracy 50%; 100% of groups had all-equal" in note
    lora = RunDir.create(str(tmp_path / "rl2"), "zero", {"lr": 5e-5, "lora_r": 16, "beta": 0.04})
    lora.log_metrics(1, accuracy=0.5, zero_std_groups=0.5, time_step_s=80.0)
    note = closing_lines(pairs[1:2], {"sft_rl": {"summary": str(lora.file("summary.json"))}})[1]
    assert "sft_rl: 1 step of GRPO at lr 5e-05 (LoRA rank 16), KL beta 0.04; sampled accuracy 50%" in note
    collapsed = RunDir.create(str(tmp_path / "rl3"), "zero", {"lr": 6e-4, "lora_r": 16})
    for step in (1, 2, 3, 4):
        collapsed.log_metrics(step, accuracy=0.1 * (step == 1), format_rate=1.0, zero_std_groups=1.0, time_step_s=9.0)
    lost = [{"a": "pure_rl", "b": "base", "difference": -0.15, "low": -0.2, "high": -0.1}]
    note = closing_lines(lost, {"zero": {"summary": str(collapsed.file("summary.json"))}})[1]
    assert "Collapsed at step 4: no sample was right for 3 steps" in note and "a KL anchor (beta)" in note


def test_pair_differences_are_paired_over_the_second_runs_problems() -> None:
    from ahalab.report import pair_differences

    correct = {"a": {"p1": 1.0, "p2": 0.0, "p3": 1.0, "p4": 0.0}, "b": {"p4": 1.0, "p3": 1.0, "p2": 1.0, "p1": 1.0}}
    (got,) = pair_differences([["a", "b"]], correct)
    # diffs 0, -1, 0, -1 (problem by problem, whatever the order): mean -0.5, sd 0.577, t(3) = 3.182
    assert got["a"] == "a" and got["b"] == "b" and got["difference"] == -0.5
    assert got["low"] == pytest.approx(-0.5 - 3.182 * 0.57735 / 2, abs=1e-4)
    assert got["high"] == pytest.approx(-0.5 + 3.182 * 0.57735 / 2, abs=1e-4)


def test_paired_differences_against_the_baseline() -> None:
    from ahalab.report import add_paired_differences

    rows = [{"run": "a", "greedy": 0.5, "x": 1}, {"run": "b", "greedy": 0.75, "x": 2}]
    correct = {"a": {"p1": 1.0, "p2": 0.0, "p3": 1.0, "p4": 0.0}, "b": {"p1": 1.0, "p2": 1.0, "p3": 1.0, "p4": 0.0}}
    add_paired_differences(rows, correct, "a")
    assert list(rows[1]) == ["run", "greedy", "greedy vs a", "x"]
    # diffs 0, 1, 0, 0: mean 0.25, sd 0.5, t(3) = 3.182: 0.25 -+ 3.182 * 0.5 / 2
    assert rows[1]["greedy vs a"] == "+0.250 [-0.545, 1.046]" and rows[0]["greedy vs a"] == "+0.000 [0.000, 0.000]"
