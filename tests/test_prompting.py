"""A tier's prompt format: the template frames prompts (and chat for models without a chat template); stops merge."""

import pytest

from mesh.config import ServeConfig
from tier_server.engine import ChatTurn, RequestRejected
from tier_server.prompting import PromptFormat

QA = PromptFormat("Question: {prompt}\nAnswer:", ("\nQuestion:",))


def test_a_raw_prompt_is_framed_by_the_template_or_left_alone_without_one():
    """With a template the prompt goes inside it; without one it is sent as given."""
    assert QA.render("What is 2+2?", chat_template=True) == "Question: What is 2+2?\nAnswer:"
    assert PromptFormat().render("What is 2+2?", chat_template=False) == "What is 2+2?"


def test_chat_turns_use_the_models_chat_template_when_it_has_one():
    """Turns pass through untouched for the engine's chat template."""
    turns = (ChatTurn("user", "hi"),)
    assert QA.render(turns, chat_template=True) == turns


def test_chat_turns_become_template_text_when_the_model_has_no_chat_template():
    """System text first, user turns framed, assistant turns after their frame, ending ready for the next answer."""
    turns = (ChatTurn("system", "Be brief."), ChatTurn("user", "2+2?"), ChatTurn("assistant", "4"), ChatTurn("user", "3+3?"))
    assert QA.render(turns, chat_template=False) == "Be brief.\n\nQuestion: 2+2?\nAnswer: 4\nQuestion: 3+3?\nAnswer:"


def test_chat_without_any_template_is_a_clear_invalid_request():
    """A base model with no prompt_template cannot take messages: the caller is told to send a prompt."""
    with pytest.raises(RequestRejected, match="no chat template"):
        PromptFormat().render((ChatTurn("user", "hi"),), chat_template=False)


def test_tier_stops_are_added_after_the_callers_without_duplicates():
    """The caller's stop strings come first; the tier's are appended once."""
    assert QA.stops(("!",)) == ("!", "\nQuestion:")
    assert QA.stops(("\nQuestion:",)) == ("\nQuestion:",)


def test_a_template_without_the_placeholder_or_an_empty_stop_fails_at_start():
    """The serve block refuses a prompt_template lacking {prompt} and empty stop strings."""
    with pytest.raises(ValueError, match="must contain"):
        ServeConfig(prompt_template="Question:")
    with pytest.raises(ValueError, match="must not be empty"):
        ServeConfig(stop=[""])


def test_the_launchers_flags_carry_template_and_stops_exactly():
    """tier_argv → load_tier_config round-trips a template and stop strings with newlines, commas and spaces."""
    from mesh.config import TierSpec
    from tier_server.config import load_tier_config, tier_argv

    serve = {"prompt_template": "Question: {prompt}\nAnswer:", "stop": ["\nQuestion:", " a, b ", '"q"\\']}
    spec = TierSpec.model_validate({"name": "g", "address": "127.0.0.1:1", "serve": serve})
    cfg = load_tier_config(tier_argv(spec))
    assert (cfg.prompt_template, cfg.stop) == (serve["prompt_template"], serve["stop"])
