"""Compile errors that say where the problem is: file, field path and stage."""
from __future__ import annotations


class WorkflowError(ValueError):
    """A workflow spec is invalid.

    The message names the source file (or ``<builder>``), the field path
    (``stages[2].next[0].goto``) and, when known, the stage.
    """

    def __init__(self, source: str, path: str, message: str, stage: str | None = None) -> None:
        self.source = source
        self.path = path
        self.stage = stage
        self.reason = message
        where = f"{source}: {path}" if path else source
        if stage:
            where += f" (stage {stage!r})"
        super().__init__(f"{where}: {message}")
