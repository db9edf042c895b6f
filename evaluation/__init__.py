"""Evaluation and fine-tuning of a trained checkpoint: text-video retrieval (zero-shot or
after contrastive fine-tuning of a dual encoder) and its metrics.

Sits above `recipes` (it loads what training wrote) and `tools` (a json test split is sharded
first); the command front ends in `commands` call it.
"""
