"""Turn an engine completion into a stage result (outcome + parsed output)."""
from __future__ import annotations

from cortex.core import EMPTY, OK, CallResult, Completion
from cortex.workflow.graph import Stage


def llm_result(stage: Stage, completion: Completion) -> CallResult:
    """``ok`` with the text (and extracted SQL for ``parse: sql``); ``empty`` if no text."""
    text = completion.text.strip()
    output: dict[str, object] = {"text": text}
    if stage.llm is not None and stage.llm.parse == "sql":
        from cortex.nl2sql.extract import extract_sql

        output["sql"] = extract_sql(text)
    outcome = OK if text else EMPTY
    return CallResult(outcome, output, completion.usage, completion.engine_id)
