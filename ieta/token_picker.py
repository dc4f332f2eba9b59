"""The next token of each row from a decode step's logits: greedy, or nucleus (top-p) sampling with HF's semantics.

On CPU the probabilities go through one fp32 buffer kept across steps, softmaxed in place: a fresh ``(rows, vocab)``
fp32 tensor per step (39 MB at 64 rows of Qwen2.5's 151936 tokens, above glibc's largest mmap threshold) is mapped
and faulted in anew each time, which made sampling a token cost more than some decode steps' GEMMs (64 rows on an AMX
Xeon: 42 ms a step, 12 ms with the buffer; the probabilities are bitwise the same).
"""

from __future__ import annotations

import torch

#: top-p looks for the nucleus among the most likely tokens first, this many, then more (exact: a row whose
#: candidates hold less than top_p of the mass tries the next size, and at last a full sort)
CANDIDATES = (64, 1024)
#: the candidates' search reads the vocabulary in groups of this many tokens: a row's k most likely tokens lie in
#: the k groups with the largest maxima, so one max per group and a top-k over k groups' tokens replace a top-k over
#: the vocabulary (6.5 ms at 64 rows x 151936)
GROUP = 64


class TokenPicker:
    """``temperature <= 0``: greedy (argmax); else nucleus sampling at ``top_p`` (1: the whole distribution), drawn
    with ``generator``. One per decoding loop: it keeps its buffer between steps."""

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator | None = None) -> None:
        self.temperature, self.top_p, self.generator = temperature, top_p, generator
        self.buffer: torch.Tensor | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(rows, vocab)`` -> the chosen token of each row ``(rows,)``."""
        if self.greedy:
            return logits.argmax(-1)
        tokens = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        for rows, weights, candidates in self._nuclei(self.probabilities(logits)):
            tokens[rows] = self._draw(weights, candidates)
        return tokens

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``softmax(logits / temperature)`` in fp32; on CPU a view of the reused buffer (valid until the next call)."""
        if logits.device.type != "cpu":
            return (logits.float() / self.temperature).softmax(-1)
        rows, vocab = logits.shape
        if self.buffer is None or self.buffer.shape[0] < rows or self.buffer.shape[1] != vocab:
            self.buffer = torch.empty(rows, vocab, dtype=torch.float32)
        probs = self.buffer[:rows]
        probs.copy_(logits)
        probs.div_(self.temperature)
        return torch.ops.aten._softmax.out(probs, -1, False, out=probs)

    def verify(self, logits: torch.Tensor, guess: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Speculative decoding's check of guessed tokens, exact: the tokens kept are distributed as this picker's own
        picks, one forward at a time, would be.

        ``logits`` ``(rows, k + 1, vocab)``: after each row's pending token and after each of its ``k`` guesses
        ``guess`` ``(rows, k)`` (``real``: which are guesses, a prefix of each row; logits after a padding guess are
        not read). Returns ``(accepted, following)``:
        how many guesses each row keeps, and the token after them. Greedy keeps a guess equal to the argmax. Sampling
        keeps guess ``j`` with its probability under the picker's distribution after the tokens before it (the draft
        is one token for sure, so ``min(1, p / q)`` is ``p``) and, at the first guess not kept, draws from that
        distribution without the guess, renormalised (the residual ``max(0, p - q)``); after the last kept guess it
        draws from the distribution there."""
        rows, width = guess.shape
        if self.greedy:
            choice = logits.argmax(-1)
            accepted = ((choice[:, :width] == guess) & real).int().cumprod(1).sum(1)
            return accepted, choice.gather(1, accepted[:, None]).squeeze(1)
        # the token each position's distribution is asked about: the guess after it, -1 past a row's guesses
        target = torch.full((rows, width + 1), -1, dtype=torch.long, device=guess.device)
        target[:, :width] = torch.where(real, guess, -1)
        target = target.flatten()
        # positions after a row's last guess are padding: no distribution of theirs is needed
        live = (torch.arange(width + 1, device=guess.device) <= real.sum(1, keepdim=True)).flatten().nonzero()[:, 0]
        nuclei = [(live[at], weights, tokens) for at, weights, tokens in
                  self._nuclei(self.probabilities(logits.reshape(rows * (width + 1), -1)[live]))]
        chance = torch.zeros(rows * (width + 1), dtype=torch.float32, device=guess.device)
        for at, weights, tokens in nuclei:
            hit = tokens == target[at, None]
            chance[at] = (weights * hit).sum(-1) / weights.sum(-1)
        kept = torch.rand(rows, width, generator=self.generator, device=guess.device) < chance.view(rows, -1)[:, :width]
        accepted = (kept & real).int().cumprod(1).sum(1)
        stop = torch.arange(rows, device=guess.device) * (width + 1) + accepted  # where each row draws its next token
        following = torch.empty(rows, dtype=torch.long, device=guess.device)
        for at, weights, tokens in nuclei:
            mine = torch.isin(at, stop)
            if not mine.any():
                continue
            weights, tokens, at = weights[mine], tokens[mine], at[mine]
            weights = weights * (tokens != target[at, None])  # the rejected guess (none where every guess was kept)
            following[torch.div(at, width + 1, rounding_mode="floor")] = self._draw(weights, tokens)
        return accepted, following

    def _nuclei(self, probs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each row's nucleus, in groups ``(rows, weights, tokens)``: the candidates' probabilities (zero outside
        the nucleus, unnormalised) and their token ids; top-p looks among the :data:`CANDIDATES` first, then sorts."""
        every = torch.arange(probs.shape[0], device=probs.device)
        if self.top_p >= 1:
            return [(every, probs, torch.arange(probs.shape[1], device=probs.device).expand_as(probs))]
        groups, rows = [], every
        for k in CANDIDATES:
            top, idx = top_k(probs if len(rows) == len(probs) else probs[rows], k)  # no copy of the whole buffer
            inside = top.sum(-1) >= self.top_p
            if inside.any():
                groups.append((rows[inside], self._nucleus(top[inside]), idx[inside]))
            rows = rows[~inside]
            if not len(rows):
                return groups
        top, idx = probs[rows].sort(dim=-1, descending=True)
        return groups + [(rows, self._nucleus(top), idx)]

    def _nucleus(self, top: torch.Tensor) -> torch.Tensor:
        """Sorted candidates' probabilities with those outside the nucleus zeroed: a candidate stays while the mass
        before it is below ``top_p``."""
        return top * ((top.cumsum(-1) - top) < self.top_p)

    def _draw(self, weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """A token from each row's candidates ``tokens``, drawn in proportion to ``weights``."""
        return tokens.gather(-1, torch.multinomial(weights, 1, generator=self.generator)).squeeze(-1)


def top_k(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``probs.topk(k, dim=-1)`` (values sorted, largest first; which of equal values is picked may differ), for a
    large vocabulary through the ``k`` groups of :data:`GROUP` tokens with the largest maxima."""
    rows, vocab = probs.shape
    if vocab % GROUP or 4 * k * GROUP > vocab:
        return probs.topk(min(k, vocab), dim=-1)
    groups = probs.view(rows, vocab // GROUP, GROUP)
    best = groups.amax(-1).topk(k, dim=-1).indices  # (rows, k)
    tokens = groups.gather(1, best[..., None].expand(rows, k, GROUP)).view(rows, k * GROUP)
    top, at = tokens.topk(k, dim=-1)
    return top, best.gather(1, at // GROUP) * GROUP + at % GROUP
