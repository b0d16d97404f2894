"""Prompt token counts for the context-length check, kept off the hot path.

With a byte-level BPE tokenizer a text of B UTF-8 bytes is at most B tokens,
so `upper_bound` (bytes plus a chat-template allowance) proves most prompts fit
without tokenizing. Only when that bound is too big for some tier does the
router tokenize, with that tier's own tokenizer.json (`tokenizers` library),
once per tokenizer file per request, off the event loop. That count covers the
caller's text only (the tier adds its template), so it is a lower bound: the
router refuses PROMPT_TOO_LONG only when even the text alone cannot fit, and
the tier, which counts the templated prompt, has the last word.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tokenizers import Tokenizer

log = logging.getLogger("qarr.router")

# The chat template wraps each message in role markers and may add a default system prompt.
TEMPLATE_TOKENS_PER_REQUEST = 48
TEMPLATE_TOKENS_PER_MESSAGE = 8


def upper_bound(prompt: str, contents: Sequence[str]) -> int:
    """At most this many prompt tokens (byte-level BPE: a token covers at least one byte)."""
    if prompt:
        return len(prompt.encode()) + TEMPLATE_TOKENS_PER_REQUEST
    return (
        sum(len(c.encode()) for c in contents)
        + TEMPLATE_TOKENS_PER_MESSAGE * len(contents)
        + TEMPLATE_TOKENS_PER_REQUEST
    )


class TokenCounter:
    """Counts prompt tokens with a tier's tokenizer.json; loads each file once."""

    def __init__(self) -> None:
        self._tokenizers: dict[str, Tokenizer | None] = {}

    def tokenizer(self, path: str) -> Tokenizer | None:
        if path not in self._tokenizers:
            try:
                self._tokenizers[path] = Tokenizer.from_file(path) if path else None
            except Exception as e:  # a bad file must not stop routing: fall back to the byte bound
                log.warning("cannot load tokenizer %s (%s); using the byte bound", path, e)
                self._tokenizers[path] = None
        return self._tokenizers[path]

    def count(self, path: str, prompt: str, contents: Sequence[str]) -> int | None:
        """Tokens of the caller's text (no template: at most what the tier will count), or None without a tokenizer."""
        tok = self.tokenizer(path)
        if tok is None:
            return None
        if prompt:
            return len(tok.encode(prompt, add_special_tokens=False))
        encoded = tok.encode_batch(list(contents), add_special_tokens=False)
        return sum(len(e.ids) for e in encoded)
