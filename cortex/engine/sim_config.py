"""Configuration of the simulated engine: its cost model and memory (docs/simulator.md).

``SimEngineConfig`` is what ``cortex profile`` calibrates and ``cortex bench --engine sim``
takes; ``cortex.engine.sim`` re-exports it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class SimEngineConfig:
    """Cost model of one engine. Defaults: Llama-3.1-8B (bf16) on one H100-80GB under
    vLLM; docs/simulator.md says which numbers are measured and which are assumed."""

    prefill_s_per_token: float = 4.0e-5            # ~25k uncached prompt tokens/s
    prefill_overhead_s: float = 0.005              # per prefill iteration
    decode_base_s: float = 0.0065                  # one decode step = base ...
    decode_per_seq_s: float = 0.0001               # ... + this per sequence in the batch
    kv_capacity_tokens: int = 440_000              # ~54 GiB of KV at 128 KiB/token
    block_size: int = 16
    max_num_seqs: int = 256
    cached_prefix_load_s_per_token: float = 0.0    # reusing a cached token (GPU: ~free)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"SimEngineConfig.{f.name} must be a number, got {value!r}")
            if f.type == "int" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"SimEngineConfig.{f.name} must be an integer >= 1, "
                                 f"got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"SimEngineConfig.{f.name} must be finite and >= 0, "
                                 f"got {value!r}")
        if self.decode_base_s <= 0:
            raise ValueError("SimEngineConfig.decode_base_s must be > 0")
        if self.kv_capacity_tokens < self.block_size:
            raise ValueError(f"SimEngineConfig.kv_capacity_tokens ({self.kv_capacity_tokens}) "
                             f"must hold at least one block of {self.block_size} tokens")

    @property
    def num_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_size

    def decode_step_s(self, batch: int) -> float:
        return self.decode_base_s + self.decode_per_seq_s * batch

    @classmethod
    def from_profile(cls, source: str | Path | Mapping[str, Any]) -> SimEngineConfig:
        """Load a calibration: a mapping or JSON file whose keys are field names, at
        top level or under ``"engine_profile"``. Missing keys keep their defaults.

        Raises:
            ValueError: unreadable file, not an object, unknown key, or a value of
                the wrong type or range; the message names the file.
        """
        where = "engine profile" if isinstance(source, Mapping) else str(source)
        try:
            data = source if isinstance(source, Mapping) else json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: cannot read engine profile: {exc}") from exc
        data = data.get("engine_profile", data) if isinstance(data, Mapping) else data
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: engine profile must be a JSON object")  # noqa: TRY004
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown engine profile keys {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
