"""``sft``: rejection-sampling fine-tuning (TRL ``SFTTrainer`` + LoRA) on the distinct passing samples."""

from __future__ import annotations

from ieta.methods.base import IterationData, Method


class Sft(Method):
    name = "sft"
    data_file = "sft.jsonl"
    trainer_config = "trl.SFTConfig"

    def training_rows(self, it: IterationData) -> list[dict]:
        from ieta.pairs import sft_examples

        return sft_examples(it.problems, it.executions, it.cfg.method.pairs, prompt_for=it.prompt_for,
                            references=it.references)

    def train(self, model, tokenizer, problems, rows, cfg, *, steps, out_dir, seed, progress):
        from ieta.train import train_sft

        return train_sft(model, tokenizer, rows, cfg.method, steps=steps, out_dir=out_dir, seed=seed,
                         progress=progress)


METHOD = Sft()
