"""Decontamination: drop training problems that share a word n-gram with an evaluation set (open-r1 / s1 style).

Text is lowercased and split on whitespace into word n-grams (8 by default), as open-r1's
``decontaminate.py`` does; a text shorter than n words counts as one n-gram of its own, so "What is
12 + 7?" still matches itself. Templated tasks repeat the same wording in every problem ("create an
equation that equals"), which would match everything: an n-gram found in more than ``common_share``
of an evaluation set's problems (and more than ``MIN_COMMON_DOCS``) is template text and ignored (the
report counts them). What remains are a problem's distinctive n-grams; see ``decontaminate`` for the
rule on how many must be shared.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ahalab.errors import UserError
from ahalab.types import Problem

MIN_COMMON_DOCS = 5


@dataclass
class EvalSet:
    """Evaluation problems to protect: a name and (id, text) pairs."""

    name: str
    texts: list[tuple[str, str]]


def eval_set_from_task(task: str, data: str | None = None, limit: int | None = None, seed: int = 0,
                       options: dict[str, Any] | None = None, name: str | None = None) -> EvalSet:
    """The questions of a task's problems (a file through the task's loader, or generated from ``seed``).

    Plain JSONL files go through the ``jsonl`` task (``options={"question_field": "problem"}`` etc.).
    """
    from ahalab.tasks import get_task

    problems = get_task(task, **(options or {})).load(data, limit=limit, seed=seed)
    label = name or (f"{task}:{data}" if data else f"{task}(seed={seed})")
    return EvalSet(label, [(p.id, p.question) for p in problems])


def ngrams(text: str, n: int) -> set[str]:
    """Lowercased whitespace-word n-grams; the whole text as one n-gram when it has fewer than n words."""
    words = text.lower().split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass
class NgramIndex:
    """n-gram -> the evaluation problems containing it, and each problem's count of distinctive n-grams."""

    n: int
    docs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # n-gram -> [(eval set, eval id)]
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (eval set, eval id) -> distinctive n-grams
    template: set[str] = field(default_factory=set)
    ignored: dict[str, int] = field(default_factory=dict)  # eval set -> template n-grams ignored

    @classmethod
    def build(cls, eval_sets: Sequence[EvalSet], n: int = 8, common_share: float = 0.5) -> NgramIndex:
        if n < 1:
            raise UserError(f"n-gram size must be >= 1 (got {n})")
        index = cls(n)
        for es in eval_sets:
            grams = [(pid, ngrams(text, n)) for pid, text in es.texts]
            counts: dict[str, int] = {}
            for _, gs in grams:
                for g in gs:
                    counts[g] = counts.get(g, 0) + 1
            limit = max(MIN_COMMON_DOCS, common_share * len(es.texts))
            common = {g for g, c in counts.items() if c > limit}
            index.ignored[es.name] = len(common)
            index.template |= common
            for pid, gs in grams:
                distinctive = gs - common
                index.sizes[(es.name, pid)] = len(distinctive)
                for g in distinctive:
                    index.docs.setdefault(g, []).append((es.name, pid))
        return index

    def match(self, text: str) -> tuple[float, str, str, str] | None:
        """The evaluation problem ``text`` overlaps most: (overlap, eval set, eval id, one shared n-gram), or None.

        Overlap is the number of shared distinctive n-grams over the smaller of the two texts' counts,
        so a short evaluation problem pasted into a long training text counts as fully shared.
        """
        grams = sorted(ngrams(text, self.n) - self.template)
        shared: dict[tuple[str, str], list[str]] = {}
        for g in grams:
            for doc in self.docs.get(g, ()):
                shared.setdefault(doc, []).append(g)
        if not shared:
            return None
        scored = [(len(hits) / min(len(grams), self.sizes[doc]), doc, hits[0]) for doc, hits in shared.items()]
        share, doc, ngram = max(scored, key=lambda item: item[0])
        return share, doc[0], doc[1], ngram


@dataclass
class Decontaminated:
    kept: list[Problem]
    removed: list[dict[str, Any]]  # problem_id, question, eval_set, eval_id, share, ngram
    summary: dict[str, Any]


def decontaminate(problems: Sequence[Problem], eval_sets: Sequence[EvalSet], n: int = 8, overlap: float = 0.5,
                  common_share: float = 0.5) -> Decontaminated:
    """Split ``problems`` into clean ones and a report of the removed ones.

    A problem is removed when its overlap with one evaluation problem (``NgramIndex.match``) is more
    than ``overlap``; ``overlap=0`` removes on any shared n-gram (open-r1's rule). The default 0.5
    keeps templated problems that share one slot with an evaluation problem (a countdown problem
    with the same target but other numbers) and removes copies, near-copies and embedded copies.
    """
    if not 0 <= overlap < 1:
        raise UserError(f"overlap must be in [0, 1) (got {overlap})")
    index = NgramIndex.build(eval_sets, n, common_share)
    kept, removed = [], []
    for p in problems:
        hit = index.match(p.question)
        if hit is None or hit[0] <= overlap:
            kept.append(p)
        else:
            share, es, eid, ngram = hit
            removed.append({"problem_id": p.id, "question": p.question[:120], "eval_set": es, "eval_id": eid,
                            "share": round(share, 3), "ngram": ngram})
    by_set: dict[str, int] = {}
    for r in removed:
        by_set[r["eval_set"]] = by_set.get(r["eval_set"], 0) + 1
    summary = {"ngram": n, "overlap": overlap, "checked": len(problems), "removed": len(removed), "kept": len(kept),
               "eval_sets": {es.name: {"problems": len(es.texts), "removed_for": by_set.get(es.name, 0),
                                       "template_ngrams_ignored": index.ignored[es.name]} for es in eval_sets}}
    return Decontaminated(kept, removed, summary)


def check_eval_specs(specs: Sequence[dict[str, Any]] | None) -> None:
    """UserError naming the entry of a config's ``decontaminate`` list that is not an evaluation set."""
    for i, s in enumerate(specs or []):
        if not isinstance(s, dict) or "task" not in s or set(s) - {"task", "data", "limit", "seed", "options"}:
            raise UserError(f"decontaminate[{i}]: an evaluation set is a mapping with a 'task' and optionally data, "
                            f"limit, seed, options; got {s!r}")


def decontaminate_against(problems: Sequence[Problem], specs: Sequence[dict[str, Any]] | None, n: int = 8,
                          overlap: float = 0.5) -> Decontaminated:
    """``decontaminate`` against the evaluation sets a config lists: ``[{task, data, limit, seed, options}]``."""
    check_eval_specs(specs)
    eval_sets = [eval_set_from_task(s["task"], s.get("data"), s.get("limit"), s.get("seed", 0), s.get("options"))
                 for s in specs or []]
    return decontaminate(problems, eval_sets, n, overlap)
