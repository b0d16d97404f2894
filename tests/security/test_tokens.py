"""The token verifier every door shares (router/auth.py): sources, format, constant-time check, no echo."""

from __future__ import annotations

import hmac

import pytest

from mesh.config import AuthConfig
from router import auth
from router.auth import TokenFileError, TokenVerifier, bearer, parse_tokens

ALICE, BOB = "alice-token-0123456789", "bob-token-abcdefghijklm"


def test_tokens_come_from_a_file_and_an_environment_variable(tmp_path):
    """A tokens file and a variable (lines or commas, comments skipped) name callers; each token finds its caller."""
    (tmp_path / "tokens").write_text(f"# callers\nalice:{ALICE}\n\n")
    verifier = TokenVerifier.from_config(
        AuthConfig(tokens_file=str(tmp_path / "tokens"), tokens_env="QARR_TEST_TOKENS"),
        environ={"QARR_TEST_TOKENS": f"bob:{BOB}, carol:carol-token-000000000"},
    )
    assert verifier.callers == ("alice", "bob", "carol")
    assert verifier.caller(f"Bearer {ALICE}") == "alice"
    assert verifier.caller(f"bearer   {BOB} ") == "bob"
    assert verifier.caller(f"Bearer {ALICE[:-1]}") is None
    assert verifier.caller(ALICE) is None and verifier.caller(None) is None and verifier.caller("Bearer") is None


@pytest.mark.parametrize("text, message", [
    ("alice", "expected `caller:token`"),
    (f"al ice:{ALICE}", "expected `caller:token`"),
    ("alice:short", "at least 16"),
    (f"alice:{ALICE}\nbob:{ALICE}", "token appears twice"),
    ("alice:has space in it 0123456", "visible ASCII"),
])
def test_a_bad_tokens_file_is_refused_without_quoting_a_token(text, message):
    """Each malformed entry is refused with its entry number and what is wrong, and the message holds no token."""
    with pytest.raises(TokenFileError, match=message) as e:
        parse_tokens(text, "tokens")
    for secret in (ALICE, BOB, "short", "has space"):
        assert secret not in str(e.value)


def test_a_caller_may_hold_two_tokens_while_one_is_rotated():
    """Two tokens naming one caller both work and name the same caller (so they share its stream limit)."""
    verifier = TokenVerifier(parse_tokens(f"alice:{ALICE}\nalice:{BOB}", "tokens"))
    assert verifier.callers == ("alice",)
    assert verifier.caller(f"Bearer {ALICE}") == verifier.caller(f"Bearer {BOB}") == "alice"


def test_missing_sources_are_clear_errors(tmp_path):
    """A tokens file that cannot be read, an unset variable and an empty file each say which setting failed."""
    with pytest.raises(TokenFileError, match="auth.tokens_file: cannot read"):
        TokenVerifier.from_config(AuthConfig(tokens_file=str(tmp_path / "nope")))
    with pytest.raises(TokenFileError, match="QARR_NOPE is not set"):
        TokenVerifier.from_config(AuthConfig(tokens_env="QARR_NOPE"), environ={})
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(TokenFileError, match="no token"):
        TokenVerifier.from_config(AuthConfig(tokens_file=str(tmp_path / "empty")))


def test_every_known_token_is_compared_in_constant_time_whichever_matches(monkeypatch):
    """The check compares the presented token's digest with every known digest through hmac.compare_digest, the same
    number of times whether the first, the last or no token matches (no early exit to time)."""
    tokens = {f"caller{i}": f"token-{i:02d}-0123456789abcdef" for i in range(10)}
    verifier = TokenVerifier(tokens)
    calls = []
    compare = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token, caller in ((tokens["caller0"], "caller0"), (tokens["caller9"], "caller9"), ("x" * 40, None)):
        calls.clear()
        assert verifier.caller(f"Bearer {token}") == caller
        assert calls == [(32, 32)] * 10  # SHA-256 digests: equal lengths, so the length of a guess tells nothing


def test_the_verifier_never_shows_its_tokens():
    """repr of the verifier lists callers only."""
    text = repr(TokenVerifier({"alice": ALICE, "bob": BOB}))
    assert "alice" in text and ALICE not in text and BOB not in text


def test_bearer_reads_only_the_bearer_scheme():
    """`Bearer X` (any case) gives X; other schemes, a bare token or an empty value give None."""
    assert bearer("Bearer abc") == "abc" and bearer("BEARER  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("abc") is None and bearer("") is None and bearer(None) is None
