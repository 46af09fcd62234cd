"""R1-Zero: GRPO with rule rewards. grpo.py holds the math (advantages, loss), trainer.py the loop.

Nothing is imported here, so that `ahalab --help` (which imports ahalab.rl.commands) stays instant.
"""
