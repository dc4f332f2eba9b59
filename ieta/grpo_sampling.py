"""GRPO's completions sampled by IETA's decoder instead of TRL's ``model.generate``, where that is the same sampling.

TRL's GRPOTrainer (1.16) generates a group's completions with ``model.generate`` on the PEFT policy: left-padded rows
that keep computing after they end, a growing cache, the LoRA matrices applied beside every layer. On CPU
:func:`ieta.sample.continue_ids` samples the same distribution faster: the adapter folded into the weights, the model's
own dtype (the policy's arithmetic, so the completions stay on-policy), rows that leave when done, one prefill per
prompt shared by its group. The settings are the trainer's (temperature, top-p, ``max_completion_length``, its EOS
ids; no stop strings), and completions end as TRL's do: at an EOS (kept) or at the length limit.

Anything the decoder does not do goes to TRL's own generation, unchanged: vLLM or paged generation, images, more than
one process, a GPU, top-k / min-p / repetition penalty / extra ``generation_kwargs``, a model :mod:`ieta.decode` cannot
take. :func:`why_not` says which.

The same trainer class wraps the backbone's forward (:mod:`ieta.grpo_forward`): right-padded rows attend without a
mask, and the frozen blocks below the adapters run once per row (the loss's forward replays the reference pass's);
LoRA's dropout draws its masks with :mod:`ieta.lora_dropout`, as every IETA trainer does.
"""

from __future__ import annotations

from ieta import grpo_forward
from ieta.lora_dropout import use_mask_dropout
from ieta.sample import continue_ids, uses_decoder


def why_not(trainer, model, images, multimodal_fields) -> str | None:
    """Why ``trainer``'s completions must come from TRL's generation (``None``: IETA's decoder samples them)."""
    args = trainer.args
    reasons = [
        (trainer.use_vllm, "vLLM generation"),
        (getattr(trainer, "use_transformers_continuous_batching", False), "transformers' paged generation"),
        (images is not None or bool(multimodal_fields), "images"),
        (trainer.accelerator.num_processes > 1, "more than one process"),
        (trainer.top_k not in (0, None) or trainer.min_p is not None or trainer.repetition_penalty != 1.0,
         "top-k, min-p or a repetition penalty"),
        (bool(args.generation_kwargs), "generation_kwargs"),
    ]
    why = next((text for cond, text in reasons if cond), None)
    return why or uses_decoder(model)


def trainer_class():
    """TRL's GRPOTrainer with :func:`continue_ids` sampling the completions wherever :func:`why_not` allows, and the
    backbone's forward of :mod:`ieta.grpo_forward` (one process only)."""
    from trl import GRPOTrainer

    class IetaGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            #: completions each generator sampled so far (``"ieta decoder"``, ``"TRL generate (<why>)"``); the
            #: iteration writes it to ``grpo_sampling.json`` (``ieta.train.save_training``)
            self.sampled_by: dict[str, int] = {}
            self._decoder_calls = 0
            #: the backbone's forward (ieta.grpo_forward; None: another model shape, or several processes)
            self.grpo_forward = (grpo_forward.install(self.accelerator.unwrap_model(self.model))
                                 if self.accelerator.num_processes == 1 else None)
            use_mask_dropout(self.model)

        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            finally:  # the policy leaves training with its own forward (and no kept rows)
                if self.grpo_forward is not None:
                    self.grpo_forward.restore()

        def _generate(self, prompts):
            out = super()._generate(prompts)
            if self.grpo_forward is not None and len(out) == 8:  # TRL 1.16: (prompt_ids, completion_ids, tool_mask,
                self.grpo_forward.skip_unscored(out[1], out[2])  # ...): the loss masks tool_mask's 0 out
            return out

        def _generate_and_score_completions(self, *args, **kwargs):
            if self.grpo_forward is not None:
                self.grpo_forward.clear()  # a new generation batch: new rows
            return super()._generate_and_score_completions(*args, **kwargs)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            model = self.accelerator.unwrap_model(self.model)
            why = why_not(self, model, images, multimodal_fields)
            key = "ieta decoder" if why is None else f"TRL generate ({why})"
            self.sampled_by[key] = self.sampled_by.get(key, 0) + len(prompt_ids)
            if why is not None:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     *args, **kwargs)
            self._decoder_calls += 1
            completions = continue_ids(model, prompt_ids, temperature=self.temperature, top_p=self.top_p,
                                       max_new_tokens=self.max_completion_length, eos=list(self.eos_token_ids),
                                       seed=self.args.seed * 1_000_003 + self._decoder_calls - 1)
            return completions, None  # TRL's own path returns no sampling log-probs either

    return IetaGRPOTrainer
