"""pass@k against a brute-force count; majority vote by equivalence; the reflection rate of RL samples."""
from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from ahalab.data.programs import CountdownTeacher
from ahalab.eval.metrics import default_ks, majority_vote, pass_at_k
from ahalab.rl.analytics import reflection_rate
from ahalab.types import Problem


@pytest.mark.parametrize("n,c", [(1, 0), (1, 1), (5, 2), (8, 3), (8, 8), (10, 0), (6, 5)])
def test_pass_at_k_matches_brute_force(n: int, c: int) -> None:
    outcomes = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        brute = Fraction(sum(any(outcomes[i] for i in s) for s in subsets), len(subsets))
        assert pass_at_k(n, c, k) == pytest.approx(float(brute), abs=1e-12)


def test_pass_at_k_rejects_bad_k() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def _num_equal(a: str, b: str) -> bool:
    return Fraction(a) == Fraction(b)


def test_majority_vote_groups_by_equivalence() -> None:
    answer, idx, share = majority_vote(["1/2", "3", "0.5", "3", "2/4"], _num_equal)
    assert answer == "1/2" and idx == 0 and share == pytest.approx(3 / 5)


def test_majority_vote_weights_and_none() -> None:
    answer, idx, share = majority_vote(["3", None, "4", "4"], _num_equal, weights=[5.0, 9.0, 1.0, 1.0])
    assert (answer, idx) == ("3", 0) and share == pytest.approx(5 / 7)
    assert majority_vote([None, None], _num_equal) == (None, -1, 0.0)


def test_majority_vote_tie_goes_to_first_and_survives_bad_equivalence() -> None:
    def boom(a: str, b: str) -> bool:
        raise RuntimeError("verifier crashed")

    assert majority_vote(["x", "y", "y", "x"], boom)[:2] == ("x", 0)


def test_default_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(6) == [1, 2, 4, 6]


def test_eval_summary_reports_pass_at_10_for_code_benchmarks() -> None:
    """With 20 samples the summary has HumanEval's pass@10 (the unbiased estimator), besides the powers of two."""
    from ahalab.eval.evaluate import summarize
    from ahalab.tasks import get_task
    from ahalab.types import Completion, Problem, Sample

    task = get_task("arithmetic")
    problem = Problem(id="p", question="1+1", answer="2")
    groups = [[Sample(problem, "", "", Completion(text="2", token_ids=[1], finish_reason="stop"), "2" if i < 3 else "3",
                      1.0 if i < 3 else 0.0, index=i) for i in range(20)]]
    summary, rows = summarize(groups, task, 20)
    assert [k for k in rows[0] if k.startswith("pass@")] == [f"pass@{k}" for k in (1, 2, 4, 8, 10, 16, 20)]
    assert summary["pass@10"] == pytest.approx(pass_at_k(20, 3, 10))



def test_reflection_rate_counts_reflection_and_backtracking_phrases_on_word_boundaries() -> None:
    problem = Problem("c1", "Using the numbers [30, 100, 93] ...", "23", {"numbers": [30, 100, 93], "target": 23})
    search = CountdownTeacher(min_dead_ends=1).solve(problem)  # the journey traces' own backtracking
    direct = CountdownTeacher(max_dead_ends=0).solve(problem)
    assert "Back up." in search and reflection_rate([search]) == 1.0 and reflection_rate([direct]) == 0.0
    texts = ["Wait, 12 + 19 is 31.", "Let me verify: 31.", "The answer is 31.", "awaits a backup of 31"]
    assert reflection_rate(texts) == 0.5 and reflection_rate([]) == 0.0
