"""A tier's prompt format: the `prompt_template` and `stop` of its serve block.

Base and fine-tuned models often want their own framing, e.g. a base model asked

    prompt_template: "Question: {prompt}\\nAnswer:"
    stop: ["\\nQuestion:"]

answers the question and stops instead of writing the next one. The template
frames raw prompts, and chat messages when the model has no chat template of its
own; the tier's stop strings are added to the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tier_server.engine import ChatTurn, RequestRejected

PLACEHOLDER = "{prompt}"


@dataclass(frozen=True, slots=True)
class PromptFormat:
    template: str | None = None  # holds PLACEHOLDER
    stop: tuple[str, ...] = ()

    def render(self, prompt: str | Sequence[ChatTurn], chat_template: bool) -> str | Sequence[ChatTurn]:
        """What the engine tokenizes: text, or chat turns for the model's own chat template."""
        if isinstance(prompt, str):
            return self._frame(prompt)
        if chat_template:
            return prompt
        if self.template is None:
            raise RequestRejected(
                "this tier's model has no chat template: send prompt instead of messages "
                "(or give the tier a prompt_template)"
            )
        return self._turns_as_text(prompt)

    def stops(self, caller: tuple[str, ...]) -> tuple[str, ...]:
        """The caller's stop strings, then the tier's own."""
        return caller + tuple(s for s in self.stop if s not in caller)

    def _frame(self, text: str) -> str:
        return self.template.replace(PLACEHOLDER, text) if self.template else text

    def _turns_as_text(self, turns: Sequence[ChatTurn]) -> str:
        """System text first, each user turn framed by the template, each assistant turn after its frame:
        'Question: q1\\nAnswer: a1\\nQuestion: q2\\nAnswer:'."""
        out = ""
        for t in turns:
            if t.role == "assistant":
                out += ("" if out[-1:].isspace() or not out else " ") + t.content + "\n"
                continue
            if out and not out.endswith("\n"):
                out += "\n"
            out += t.content + "\n\n" if t.role == "system" else self._frame(t.content)
        return out
