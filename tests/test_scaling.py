"""Inference-time scaling: selectors, scorers, beam/DVTS, budget forcing, adaptive rule, sweep, `ahalab scale`."""
from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable

import pytest

from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.eval.metrics import majority_vote
from ahalab.models.reward import RewardModel
from ahalab.scaling.adaptive import adaptive_consistency, decisive, leader_probability, stopping_point
from ahalab.scaling.beam import beam_search, dvts
from ahalab.scaling.budget import budget_forcing
from ahalab.scaling.scorers import Oracle, confidence, make_scorer
from ahalab.scaling.strategies import best_of_n, score_samples, vote, weighted_vote
from ahalab.scaling.sweep import Spec, answer_classes, orders, parse_strategies, sweep
from ahalab.tasks import get_task
from ahalab.tasks.answers import math_equal
from ahalab.tasks.base import Task
from ahalab.types import Completion, Problem, Sample

# A scripted step: (text, how it ends) with ending "eos" (end of sequence), "stop" (stop string) or "length".
Script = Callable[[str, int, int], list[tuple[str, str]]]  # (prompt, n, max_tokens) -> n steps


class ScriptedEngine(Engine):
    """An Engine whose completions come from a script; one fake token per word (EOS appended on "eos")."""

    name = "scripted"

    def __init__(self, tokenizer, script: Script) -> None:
        super().__init__("scripted")
        self._tokenizer, self.script, self.prompts = tokenizer, script, []

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=256, stop=None, seed=None,
                 logprobs=False, progress=None):
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            comps = []
            for text, end in self.script(prompt, n, max_tokens):
                ids = [7] * len(text.split()) + ([self._tokenizer.eos_token_id] if end == "eos" else [])
                comps.append(Completion(text=text, token_ids=ids, finish_reason="length" if end == "length" else "stop",
                                        logprobs=[-0.1] * len(ids) if logprobs else None,
                                        prompt_token_ids=[1] * len(prompt.split())))
            out.append(comps)
        return out

    def load_weights(self, named_tensors):
        raise NotImplementedError


class Numbers(Task):
    """A minimal task: the answer is the last number; equivalence by math_equal."""

    name = "numbers"
    extractors = ("answer_line", "last_number")

    def load(self, data=None, limit=None, seed=0):
        return []


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _samples(answers, scores=None, correct=None, tokens=None) -> list[Sample]:
    return [Sample(_problem(), "prompt", "", Completion(f"answer: {a}", [0] * (tokens[i] if tokens else 10), "stop"),
                   answer=a, score=float(bool(correct[i])) if correct else 0.0, index=i, prompt_tokens=5,
                   scores={"s": scores[i]} if scores else {}) for i, a in enumerate(answers)]


def _problem(answer="7", pid="p0") -> Problem:
    return Problem(id=pid, question="What is 3 + 4?", answer=answer)


# --- selectors and scorers --------------------------------------------------------------------------


def test_vote_groups_equivalent_forms() -> None:
    samples = _samples(["3", "0.5", "\\frac{1}{2}", "3", "1/2", None])
    assert vote(samples, math_equal) == 1  # {0.5, \frac{1}{2}, 1/2} outvote {3, 3}


def test_weighted_vote_and_best_of_n() -> None:
    samples = _samples(["3", "4", "4", "5"], scores=[0.9, 0.3, 0.3, 0.95])
    assert vote(samples, math_equal) == 1  # 4 is the most frequent
    assert weighted_vote(samples, "s", math_equal) == 3  # 5: 0.95 > 3: 0.9 > 4: 0.6
    assert best_of_n(samples, "s") == 3
    assert best_of_n(_samples(["1", "2", "3"], scores=[0.2, 0.7, 0.7]), "s") == 1  # argmax, first of ties
    assert best_of_n([], "s") == -1


def test_scorers(tiny_model, tmp_path) -> None:
    p = _problem()
    assert confidence(p, ["a", "b"], [[math.log(0.5)] * 3, None]) == pytest.approx([0.5, 0.0])
    assert Oracle(Numbers())(p, ["so 7", "so 8"], [None, None]) == [1.0, 0.0]

    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "rm")
    scores = RewardModel(str(tmp_path / "rm"), batch_size=2)(p, ["so 7", "the answer is 8", "hm"])
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)


def _countdown_group(problem: Problem, texts: list[str]) -> list[Sample]:
    return [Sample(problem, "prompt", "", Completion(t, [0] * 10, "stop"), answer=None, score=0.0, index=i,
                   prompt_tokens=5) for i, t in enumerate(texts)]


def test_best_of_n_by_self_check_ignores_the_gold_answer() -> None:
    """A wrong gold answer moves no self_check pick (an oracle reading the gold moves); self_check is no oracle."""
    task = get_task("countdown")
    problems = task.load(limit=3, seed=5)
    texts = [[f"<answer>{' - '.join(map(str, p.meta['numbers']))}</answer>", "<answer>1 + 1</answer>",
              f"<answer>{p.meta['solution']}</answer>", "no answer"] for p in problems]
    picks, names = [], []
    for graded in (problems, [dataclasses.replace(p, answer="999") for p in problems]):
        groups = [_countdown_group(p, t) for p, t in zip(graded, texts)]
        score_samples(graded, groups, "self_check", make_scorer("self_check", task))
        picks.append([best_of_n(g, "self_check") for g in groups])
        specs = parse_strategies(["best-of-n:self_check", "weighted-vote:self_check"])
        names.append([r["strategy"] for r in sweep(graded, groups, specs, [4], [0], task.equivalent)])
    assert picks[0] == picks[1] == [2, 2, 2]  # the solution each time, by the numbers and target alone
    assert names[0] == names[1] == ["best-of-n[self_check]", "weighted-vote[self_check]"]  # not "(oracle)"
    oracle = Oracle(Numbers())
    assert [best_of_n(_samples(["8", "7"], scores=oracle(_problem(gold), ["so 8", "so 7"], [None, None])), "s")
            for gold in ("7", "8")] == [1, 0]
    assert Spec("best-of-n", "oracle").name == "best-of-n[oracle] (oracle)"


def test_self_check_scorer_needs_a_task_with_one() -> None:
    can = "countdown, humaneval, code_jsonl, codegen"
    with pytest.raises(UserError, match=rf"'numbers' cannot \(tasks that can: {can}\)"):
        make_scorer("self_check", Numbers())
    with pytest.raises(UserError, match="self_check"):
        parse_strategies(["best-of-n:selfcheck"])  # the error lists the valid scorers


# --- beam search and DVTS ---------------------------------------------------------------------------


def _step_script(prompt: str, n: int, max_tokens: int) -> list[tuple[str, str]]:
    """First step alternates good/bad; after it the solution ends with 7 (good) or 9 (bad)."""
    if prompt.endswith("good step\n\n"):
        return [("The answer is 7", "eos")] * n
    if prompt.endswith("bad step\n\n"):
        return [("The answer is 9", "eos")] * n
    return [("good step" if i % 2 == 0 else "bad step", "stop") for i in range(n)]


def _prefers(word: str):
    def scorer(problem, texts, logprobs):
        return [0.9 if word in t else 0.1 for t in texts]

    return scorer


@pytest.mark.parametrize("search,n", [(beam_search, 2), (dvts, 4)])
def test_tree_search_follows_the_scorer(tokenizer, search, n) -> None:
    for word, answer in (("good", "7"), ("bad", "9")):
        engine = ScriptedEngine(tokenizer, _step_script)
        (out,) = search(engine, Numbers(), [_problem()], _prefers(word), n=n, beam_width=2, fmt="direct")
        assert out.answer == answer and out.correct == (answer == "7")
        other = "bad" if word == "good" else "good"
        assert not any(p.endswith(f"{other} step\n\n") for p in engine.prompts)  # the losing branch was pruned
        assert out.info["finished"] == n  # n // beam_width kept paths, each extended beam_width times
        assert out.cost.generated_tokens == 2 * n + 5 * n  # n first steps of 2 tokens, n last ones of 4 + EOS


# --- budget forcing ---------------------------------------------------------------------------------


def _thinker(words: int) -> Script:
    """Thinks ``words`` tokens and tries to stop (or runs out of tokens); answers "7" after </think>."""
    def script(prompt: str, n: int, max_tokens: int) -> list[tuple[str, str]]:
        if prompt.endswith(("</think>", "Final answer:")):
            return [(" The answer is 7", "eos")] * n
        k = min(words, max_tokens)
        return [(" ".join(["hmm"] * k), "stop" if k == words else "length")] * n

    return script


def test_budget_forcing_inserts_waits_and_respects_the_cap(tokenizer) -> None:
    engine = ScriptedEngine(tokenizer, _thinker(5))
    (out,) = budget_forcing(engine, Numbers(), [_problem()], fmt="direct", think_tokens=100, waits=3)
    assert out.text.count("Wait") == 3 and out.info["waits"] == 3 and out.info["thinking_tokens"] == 20
    assert out.text.endswith("</think> The answer is 7") and out.correct

    engine = ScriptedEngine(tokenizer, _thinker(5))
    (out,) = budget_forcing(engine, Numbers(), [_problem()], fmt="direct", think_tokens=12, waits=5)
    assert out.info["thinking_tokens"] == 12 and out.info["capped"]  # 5 + 5 + 2: cut off at the cap
    assert out.text.count("Wait") == 2 and "</think>\nFinal answer: The answer is 7" in out.text

    engine = ScriptedEngine(tokenizer, _thinker(5))  # no marker: stop at end of sequence, no answer phase
    (out,) = budget_forcing(engine, Numbers(), [_problem()], fmt="direct", think_tokens=100, waits=1, end_think=None)
    assert out.text.count("Wait") == 1 and "</think>" not in out.text and len(engine.prompts) == 2


# --- adaptive consistency ---------------------------------------------------------------------------


def test_leader_probability_is_the_beta_tail() -> None:
    v1, v2 = 5, 2
    grid = 200_000
    density = [x ** v1 * (1 - x) ** v2 for x in ((i + 0.5) / grid for i in range(grid))]
    assert leader_probability(v1, v2) == pytest.approx(sum(density[grid // 2:]) / sum(density), abs=1e-6)


def test_adaptive_rule_stops_early_on_unanimous_and_continues_on_split() -> None:
    assert stopping_point(["4"] * 16, math_equal) == 4  # 1 - 2^-5 >= 0.95
    assert stopping_point(["4", "5"] * 8, math_equal) == 16
    assert not decisive(["4", "4", "4", "5"], math_equal) and decisive(["4"] * 9 + ["5"], math_equal)
    assert stopping_point([None] * 6, math_equal) == 6


def test_adaptive_consistency_through_an_engine(tokenizer) -> None:
    def script(prompt: str, n: int, max_tokens: int) -> list[tuple[str, str]]:
        if "split" in prompt:
            return [(f"answer: {4 + i % 2}", "eos") for i in range(n)]  # every chunk: one 4, one 5
        return [("answer: 7", "eos")] * n

    engine = ScriptedEngine(tokenizer, script)
    problems = [_problem(), Problem(id="p1", question="a split question", answer="4")]
    easy, hard = adaptive_consistency(engine, Numbers(), problems, fmt="direct", max_samples=12, chunk=2)
    assert easy.info["samples"] == 4 and easy.correct
    assert hard.info["samples"] == 12 and hard.cost.generated_tokens == 12 * 3


# --- the subsampled sweep ---------------------------------------------------------------------------


def test_subsampled_budgets_equal_a_direct_computation() -> None:
    rng = random.Random(0)
    problems = [_problem(pid=f"p{i}") for i in range(6)]
    samples = []
    for _ in problems:
        answers = [rng.choice(["7", "7", "8", "9", None]) for _ in range(8)]
        samples.append(_samples(answers, scores=[rng.random() for _ in answers], correct=[a == "7" for a in answers],
                                tokens=[rng.randint(5, 50) for _ in answers]))
    specs = parse_strategies(["majority", "best-of-n:oracle", "weighted-vote", "pass@k", "adaptive"])
    assert specs[1].name == "best-of-n[oracle] (oracle)" and specs[3].name == "pass@k (oracle)"
    for group in samples:
        for s in group:
            s.scores = {"confidence": s.scores["s"], "oracle": float(s.correct)}
    seeds = [0, 1, 2]
    rows = sweep(problems, samples, specs, [1, 2, 4, 8], seeds, math_equal, threshold=0.9)
    got = {(r["strategy"], r["budget"]): r for r in rows}
    for k in (1, 2, 4, 8):
        accs = {name: [] for name in ("majority", "weighted-vote[confidence]", "pass@k (oracle)")}
        tokens = []
        for seed in seeds:
            subs = [[g[j] for j in order[:k]] for g, order in zip(samples, orders(problems, 8, seed))]
            maj = [s[majority_vote([x.answer for x in s], math_equal)[1]] for s in subs]
            wv = [s[majority_vote([x.answer for x in s], math_equal, [x.scores["confidence"] for x in s])[1]]
                  for s in subs]
            accs["majority"].append(sum(x.correct for x in maj) / 6)
            accs["weighted-vote[confidence]"].append(sum(x.correct for x in wv) / 6)
            accs["pass@k (oracle)"].append(sum(any(x.correct for x in s) for s in subs) / 6)
            tokens.append(sum(x.tokens for s in subs for x in s) / 6)
        for name, values in accs.items():
            assert got[(name, k)]["accuracy"] == pytest.approx(sum(values) / 3), (name, k)
            assert got[(name, k)]["gen tokens"] == pytest.approx(sum(tokens) / 3)
        assert got[("best-of-n[oracle] (oracle)", k)]["accuracy"] == got[("pass@k (oracle)", k)]["accuracy"]
        assert got[("adaptive", k)]["gen tokens"] <= got[("majority", k)]["gen tokens"]


def test_greedy_first_leads_every_budget() -> None:
    """Budget 1 is greedy itself; a check keeps greedy when it passes and replaces it only by a passing sample."""
    problems = [_problem(pid=f"p{i}") for i in range(4)]
    greedy = [_samples([a], scores=[c], correct=[a == "7"])[0] for a, c in (("7", 1.0), ("8", 1.0), ("8", 0.0),
                                                                             ("8", 0.0))]
    groups = [_samples(["9", "7", "9"], scores=[0.0, 1.0, 0.0], correct=[False, True, False]) for _ in problems[:3]]
    groups.append(_samples(["9", "9", "9"], scores=[0.0, 0.0, 0.0], correct=[False] * 3))
    specs = [Spec("best-of-n", "s")]
    rows = sweep(problems, groups, specs, [1, 2, 4], range(6), math_equal, baseline=[x.correct for x in greedy],
                 first=greedy)
    got = {r["budget"]: r for r in rows}
    assert got[1]["per_problem"] == pytest.approx([1.0, 0.0, 0.0, 0.0])  # greedy alone
    # p0: greedy passes and is right; p1: greedy passes (wrongly) and is kept; p2: greedy fails the check and the
    # passing sample is right whenever drawn (always at budget 4); p3: nothing passes, greedy stays.
    assert got[4]["per_problem"] == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert got[4]["gen tokens"] == pytest.approx(40.0)  # greedy's tokens count: 4 candidates of 10
    with pytest.raises(UserError, match="budgets"):
        sweep(problems, groups, specs, [5], [0], math_equal, first=greedy)


def test_sweep_votes_by_lookup_after_one_classing_pass() -> None:
    """Equivalence runs once per distinct string and class representative, not per subsample."""
    calls: list[tuple[str, str]] = []

    def counted(a: str, b: str) -> bool:
        calls.append((a, b))
        return math_equal(a, b)

    answers = ["7", "7.0", "8", "7", None, "9", "7", "8.00"] * 4  # 32 samples, 5 distinct strings, 3 classes
    problems = [_problem(pid=f"p{i}") for i in range(3)]
    samples = [_samples(answers, correct=[a in ("7", "7.0") for a in answers]) for _ in problems]
    specs = parse_strategies(["majority", "weighted-vote", "adaptive"])
    for group in samples:
        for s in group:
            s.scores = {"confidence": 1.0}
    rows = sweep(problems, samples, specs, [1, 2, 4, 8, 16, 32], range(5), counted)
    distinct = {a for a in answers if a is not None}
    assert len(calls) <= len(problems) * len(distinct) * (len(distinct) - 1) // 2
    eq = answer_classes(answers, math_equal)
    assert eq("7", "7.0") and eq("8", "8.00") and not eq("7", "8") and not eq("9", "8")
    majority = {r["budget"]: r["accuracy"] for r in rows if r["strategy"] == "majority"}
    assert majority[32] == 1.0  # the class {7, 7.0} outnumbers {8, 8.00} and {9}


def test_bad_sweep_strategies_are_user_errors() -> None:
    from ahalab.errors import UserError

    with pytest.raises(UserError, match="valid"):
        parse_strategies(["beam"])
    with pytest.raises(UserError, match="scorer"):
        parse_strategies(["majority:orm"])
    with pytest.raises(UserError, match="budgets"):
        sweep([_problem()], [_samples(["7", "8"])], [Spec("majority")], [1, 4], [0], math_equal)


# --- `ahalab scale` on a tiny real model ------------------------------------------------------------


def test_scale_command_modes_on_a_tiny_model(tmp_path, tiny_model) -> None:
    from ahalab.cli import main
    from ahalab.engines import make_engine
    from ahalab.scaling.commands import run_scale
    from ahalab.scaling.config import MODES

    out = tmp_path / "sweep"
    assert main(["scale", "--model", tiny_model, "--engine", "hf", "--task", "arithmetic", "--limit", "3",
                 "--max-samples", "4", "--seeds", "2", "--max-tokens", "6", "--out", str(out), "dtype=float32"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 1 + 5 * 3 and summary["timing"]["sampled_tokens"] > 0
    assert {r["strategy"] for r in summary["rows"]} >= {"greedy", "majority", "pass@k (oracle)"}
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3 * 5
    assert "Self-consistency at k=4" in (out / "report.md").read_text()
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 0
    first = tmp_path / "greedy-first"  # greedy leads the candidates: budget 1 is greedy, the top budget is 1 + 4
    assert main(["scale", "--model", tiny_model, "--engine", "hf", "--task", "arithmetic", "--limit", "3",
                 "--max-samples", "4", "--seeds", "2", "--max-tokens", "6", "--greedy-first", "--budgets", "1,5",
                 "--strategies", "best-of-n,majority", "--out", str(first), "dtype=float32"]) == 0
    rows = {(r["strategy"], r["budget"]): r for r in json.loads((first / "summary.json").read_text())["rows"]}
    assert rows[("best-of-n[confidence]", 1)]["accuracy"] == rows[("greedy", 1)]["accuracy"]
    assert rows[("majority", 5)]["gen tokens"] > rows[("greedy", 1)]["gen tokens"]
    assert "start with the greedy answer" in (first / "report.md").read_text()

    engine = make_engine("hf", tiny_model, dtype="float32", seed=0)
    base = {"model": tiny_model, "task": "arithmetic", "task_options": {"levels": [1, 3]}, "limit": 2,
            "max_tokens": 6}
    for mode, extra in [("beam", {"budgets": [2], "beam_width": 2, "step_tokens": 3, "max_steps": 2}),
                        ("dvts", {"budgets": [4], "beam_width": 2, "step_tokens": 3, "max_steps": 2}),
                        ("budget-forcing", {"budgets": [0, 1], "think_tokens": 4, "answer_tokens": 3}),
                        ("adaptive", {"budgets": [3]}), ("route", {"reason_samples": 2, "probe_samples": 2})]:
        cfg = MODES[mode](strategy=mode, out=str(tmp_path / mode), **base, **extra)
        run_dir, printed = run_scale(cfg, engine)
        summary = json.loads(run_dir.file("summary.json").read_text())
        assert summary["mode"] == mode and printed and run_dir.file("accuracy_vs_tokens.png").exists()
        if mode in ("beam", "dvts"):
            assert summary["rows"][1]["strategy"] == f"{mode}[confidence]"  # the scorer, "(oracle)" for the oracle
        if mode == "route":
            assert [r["strategy"] for r in summary["rows"]][:2] == ["always-direct", "always-reason"]
            assert summary["by_level"] and {r["level"] for r in summary["by_level"]} <= {1, 3}
