"""Workflow specs: the user's graph of stages, compiled and validated.

Owns: parsing (YAML, builder), validation, the immutable ``CompiledWorkflow``.
"""
from cortex.workflow.builder import WorkflowBuilder
from cortex.workflow.compiler import compile_workflow, load_workflow
from cortex.workflow.errors import WorkflowError
from cortex.workflow.graph import END, CompiledWorkflow, Edge, Stage

__all__ = ["END", "CompiledWorkflow", "Edge", "Stage", "WorkflowBuilder", "WorkflowError",
           "compile_workflow", "load_workflow"]
