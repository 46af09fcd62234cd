"""The training core GRPO and SFT share: the step loop (``loop``), checkpoints and resume (``checkpoint``),
learning-rate schedules (``schedule``), data order (``data_order``) and the common settings (``config``)."""
