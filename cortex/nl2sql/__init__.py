"""The NL2SQL reference agent: databases, questions, SQL sandbox, tools and scoring.

Who owns what:

* ``datasets`` owns the on-disk cache of the four generated databases (``dbgen_*``) and
  the built-in question set (``questions/*.yaml``); ``benchmarks`` reads Spider/BIRD files;
* ``sandbox`` (with ``guard`` and ``errors``) runs untrusted SQL read-only and bounded;
* ``schema`` / ``schema_select`` introspect databases, pick tables, render prompt text;
* ``verify`` labels results; ``extract`` pulls SQL out of model replies;
* ``tools`` registers ``sql.schema``, ``sql.execute``, ``sql.verify`` in
  ``cortex.tools.TOOLS``; ``workflow`` compiles ``agent.yaml``; ``scoring`` judges
  execution accuracy.

See docs/nl2sql.md.
"""
