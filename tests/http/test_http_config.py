"""The mesh file's http block is typed like the rest: typos and name clashes fail at start, naming the field."""

from __future__ import annotations

import pytest

from mesh.config import MeshConfigError, load_mesh

TIERS = "tiers:\n  - {name: bf16, address: '127.0.0.1:50061'}\n"


def load(tmp_path, text: str):
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    return load_mesh(path)


def test_http_block_defaults_off_and_reads_its_settings(tmp_path):
    """No http block: the door is off; a block sets listen, default model and timeout."""
    assert load(tmp_path, TIERS).http.enabled is False
    http = load(tmp_path, TIERS + "http: {enabled: true, listen: '0.0.0.0:8080', default_model: gpt-4o, request_timeout_s: 30}\n").http
    assert (http.enabled, http.listen, http.default_model, http.request_timeout_s) == (True, "0.0.0.0:8080", "gpt-4o", 30)


@pytest.mark.parametrize("block, words", [
    ("http: {enabeld: true}", "http.enabeld: unknown field"),
    ("http: {request_timeout_s: 0}", "http.request_timeout_s"),
    ("http: {enabled: true, default_model: bf16}", "'bf16' is also a routing model name"),
])
def test_bad_http_settings_fail_naming_the_field(tmp_path, block, words):
    """A typo, a zero timeout, or a tier whose name is also a routing name is refused with the file and field."""
    with pytest.raises(MeshConfigError) as e:
        load(tmp_path, TIERS + block + "\n")
    assert words in str(e.value) and "mesh.yaml" in str(e.value)


def test_a_tier_named_auto_clashes_only_when_the_door_is_on(tmp_path):
    """`auto` is a routing name over HTTP: a tier of that name is refused when the door is enabled."""
    auto = "tiers:\n  - {name: auto, address: '127.0.0.1:50061'}\n"
    load(tmp_path, auto)
    with pytest.raises(MeshConfigError, match="'auto' is also a routing model name"):
        load(tmp_path, auto + "http: {enabled: true}\n")


def test_launcher_banner_shows_the_http_door_with_tls_and_token_flags(tmp_path):
    """`make up` prints the door's address (mesh.yaml enables it); with tls and auth the curl line says https, the CA
    and the bearer header."""
    from launcher.__main__ import banner
    from tests.harness import REPO

    text = banner("127.0.0.1:50051", ["smollm2-fp32"], 3.0, load_mesh(REPO / "mesh.yaml"))
    assert "OpenAI-compatible HTTP door on http://127.0.0.1:8000/v1" in text
    assert "curl http://127.0.0.1:8000/v1/chat/completions" in text
    locked = load(tmp_path, TIERS + "http: {enabled: true}\ntls: {cert: r.pem, key: r.key}\n"
                  "upstream_tls: {ca: ca.pem}\nauth: {tokens_env: QARR_TOKENS, allow_plaintext_tiers: true}\n")
    text = banner("127.0.0.1:50051", ["bf16"], 3.0, locked)
    assert "https://127.0.0.1:8000/v1" in text and "--cacert" in text and "authorization: Bearer $TOKEN" in text
    assert "OpenAI" not in banner("127.0.0.1:50051", ["bf16"], 3.0, load(tmp_path, TIERS))
