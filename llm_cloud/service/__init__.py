"""The recommendation service (FastAPI), laid out as vLLM's entrypoints are: the wire models live in
:mod:`tandem.protocol`, the handlers in :mod:`.serving` (no web framework), thin routes in :mod:`.routers`, and
:func:`.app.create_app` wires them with errors, metrics and API keys. ``tandem serve`` runs it.
"""
