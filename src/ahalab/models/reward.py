"""Learned reward models: an HF sequence-classification checkpoint scoring (question, response) pairs."""
from __future__ import annotations

from collections.abc import Sequence

from ahalab.errors import UserError
from ahalab.types import Problem


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
