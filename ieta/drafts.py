"""Draft tokens for speculative decoding, guessed from a row's own context (prompt lookup).

A revision turn rewrites a function that its prompt already holds (the earlier attempt), and code repeats its own
names, so a row's next tokens are often the tokens that followed the last time its latest few tokens occurred. The
decoder runs those guesses in the same forward as the row's pending token (``ieta.decode.Decoder.step(drafts)``),
and the token picker keeps those it accepts (:meth:`ieta.token_picker.TokenPicker.verify`): greedy decoding the
guesses equal to its own argmax, so the tokens are the ones plain greedy decoding picks; sampling each guess with its
probability, then a draw from the rest, so the samples keep their distribution. At a few rows a decode step is bound
by reading the weights, so the extra positions cost little.
"""

from __future__ import annotations

from collections.abc import Callable

#: longest and shortest suffix of the context that is looked up (longer first)
NGRAM_MAX, NGRAM_MIN = 3, 2


def prompt_lookup(context: list[int], k: int) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the context's last ``n`` tokens, for ``n``
    from :data:`NGRAM_MAX` down to :data:`NGRAM_MIN` (``[]``: none occurs)."""
    if k < 1:
        return []
    for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
        if len(context) <= n:
            continue
        tail, last = context[-n:], context[-1]
        end = len(context) - 1  # an occurrence ends before the context's own last token
        while True:
            try:  # the occurrence's last token, searched from the end
                end = _rindex(context, last, end)
            except ValueError:
                break
            if end + 1 >= n and context[end + 1 - n : end + 1] == tail:
                return context[end + 1 : end + 1 + k]
    return []


def _rindex(seq: list[int], value: int, stop: int) -> int:
    """The last index ``< stop`` of ``value`` in ``seq`` (``ValueError``: none)."""
    for i in range(stop - 1, -1, -1):
        if seq[i] == value:
            return i
    raise ValueError(value)


#: ``sampler.draft`` -> the draft source (``None``: no speculation)
DRAFTS: dict[str, Callable[[list[int], int], list[int]] | None] = {"prompt_lookup": prompt_lookup, "none": None}
