"""Whether an engine generates with a trainer's policy: its log-probabilities against the policy's and the base's."""
from __future__ import annotations

import torch

from ahalab.prompts import render
from ahalab.rl.batch import Prefix, plan_batches


def engine_vs_policy(trainer, base_model: str) -> tuple[float, float]:
    """(max |engine - policy|, max |engine - base model|) over the log-probabilities of 4 greedy completions of
    training prompts, as the trainer's engine sampled them (vLLM: raw log-probabilities, so temperature 1)."""
    from ahalab.models import load_model

    prompts = [render(trainer.engine.tokenizer, trainer.task, p.question, trainer.cfg.format).prompt
               for p in trainer.train_problems[:4]]
    outs = [o[0] for o in trainer.engine.generate(prompts, max_tokens=8, logprobs=True)]
    pr, cm = [c.prompt_token_ids for c in outs], [c.token_ids for c in outs]
    chunks = plan_batches(pr, cm, list(range(len(outs))), 10_000, 0)
    order = [i for chunk in chunks for mb in chunk.micro_batches for i in mb.index.tolist()]
    engine = [torch.tensor(outs[i].logprobs) for i in order]

    def gap(model) -> float:
        with torch.no_grad():
            lps = [Prefix(model, chunk).logprobs(mb)[row, :len(cm[i])] for chunk in chunks for mb in
                   chunk.micro_batches for row, i in enumerate(mb.index.tolist())]
        return max(float((got - lp).abs().max()) for got, lp in zip(engine, lps))

    return gap(trainer.policy), gap(load_model(base_model)[0])
