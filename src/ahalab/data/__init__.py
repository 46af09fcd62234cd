"""Distillation data: teachers, program teachers, rejection sampling, decontamination, journeys, datasets."""
