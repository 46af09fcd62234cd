"""Scorers for best-of-n, weighted vote and beam search: (problem, texts, logprobs) -> scores in [0, 1].

``logprobs[i]`` are the token logprobs of the part of ``texts[i]`` being judged (the whole completion
for a sample, the newest step for a beam candidate). Scores are probabilities so that summing them
(weighted vote) is meaningful.

- ``confidence``: the policy's own geometric-mean token probability, exp(mean token logprob);
- ``RewardModel``: any HF sequence-classification checkpoint, as an outcome reward model (ORM) on full
  solutions or as a process reward model (PRM) on partial ones (the score of the solution so far);
- ``Oracle``: the task's verifier against the gold answer. Analysis only, always labelled "oracle".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ahalab.errors import UserError
from ahalab.scaling.strategies import mean_logprob
from ahalab.tasks.base import Task
from ahalab.types import Problem

Scorer = Callable[[Problem, Sequence[str], Sequence[Sequence[float] | None]], list[float]]
SCORERS = ("confidence", "orm", "prm", "oracle")


def confidence(problem: Problem, texts: Sequence[str], logprobs: Sequence[Sequence[float] | None]) -> list[float]:
    """exp(mean token logprob) per text (0 when the engine gave no logprobs)."""
    return [math.exp(mean_logprob(lp)) for lp in logprobs]


class Oracle:
    """1.0 when the task's verifier accepts the text's answer, else 0.0 (uses the gold answer)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, problem: Problem, texts: Sequence[str], logprobs: Sequence) -> list[float]:
        return [float(self.task.grade(problem, t).correct) for t in texts]


class RewardModel:
    """An HF ``AutoModelForSequenceClassification`` reward model scoring (question, response) pairs.

    The pair is rendered with the reward model's chat template (user question, assistant response)
    when it has one, else as question and response separated by a blank line. One label: sigmoid of
    its logit; several: softmax probability of the last label.
    """

    def __init__(self, path: str, batch_size: int = 8, max_length: int = 2048, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        except OSError as e:
            raise UserError(f"reward model '{path}': cannot load a sequence-classification checkpoint ({e})") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def render(self, question: str, response: str) -> str:
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{question}\n\n{response}"

    def __call__(self, problem: Problem, texts: Sequence[str], logprobs: Sequence = ()) -> list[float]:
        import torch

        rendered = [self.render(problem.question, t) for t in texts]
        scores: list[float] = []
        for lo in range(0, len(rendered), self.batch_size):
            batch = self.tokenizer(rendered[lo:lo + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length,
                                   add_special_tokens=not self.tokenizer.chat_template)
            with torch.no_grad():
                logits = self.model(**batch.to(self.device)).logits.float()
            probs = torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else torch.softmax(logits, -1)[:, -1]
            scores += probs.tolist()
        return scores


def make_scorer(name: str, task: Task, orm: str | None = None, prm: str | None = None) -> Scorer:
    """A scorer by name: confidence | orm (needs ``orm``) | prm (needs ``prm``) | oracle."""
    if name == "confidence":
        return confidence
    if name == "oracle":
        return Oracle(task)
    if name in ("orm", "prm"):
        path = orm if name == "orm" else prm
        if not path:
            raise UserError(f"scorer '{name}' needs --{name} PATH (an HF sequence-classification checkpoint)")
        return RewardModel(path)
    raise UserError(f"unknown scorer '{name}'; valid: {', '.join(SCORERS)}")
