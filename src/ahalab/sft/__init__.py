"""Supervised fine-tuning: completion-only collation with packing, the trainer, `ahalab sft`."""
