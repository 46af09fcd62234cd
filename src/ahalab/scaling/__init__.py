"""Inference-time scaling: spend compute at answer time and measure what it buys.

- ``strategies``: Cost, Outcome, selectors (vote, best_of_n, weighted_vote) and ``sample_and_select``
  (greedy, CoT, self-consistency, best-of-n, weighted vote) over ``ahalab.sampling``'s samples;
- ``scorers``: confidence (policy mean token logprob), reward models (ORM/PRM), Oracle (gold answer);
- ``beam``: beam search and DVTS over blank-line steps; ``budget``: s1 budget forcing;
- ``adaptive``: adaptive-consistency's Beta stopping rule; ``route``: answer directly or escalate;
- ``sweep``: every strategy x budget from one sampling pass; ``config``: one settings class per mode;
  ``commands``: `ahalab scale`; ``stage``: the recipe stage.
"""
