"""``dpo``: offline DPO (TRL ``DPOTrainer`` + LoRA) on the iteration's execution-trace preference pairs."""

from __future__ import annotations

from ieta.methods.base import IterationData, Method


class Dpo(Method):
    name = "dpo"
    data_file = "pairs.jsonl"
    trainer_config = "trl.DPOConfig"

    def training_rows(self, it: IterationData) -> list[dict]:
        return it.pairs

    def train(self, model, tokenizer, problems, rows, cfg, *, steps, out_dir, seed, progress):
        from ieta.train import train_dpo

        return train_dpo(model, tokenizer, rows, cfg.method, steps=steps, out_dir=out_dir, seed=seed,
                         progress=progress)


METHOD = Dpo()
