"""A local stand-in for Constant Contact: OAuth server, JWKS, the v3 API, CC's limits and faults.

It runs as its own process (``manage.py run_sandbox`` or ``python -m integrations.sandbox``),
keeps all state in memory and imports nothing from Django, so it starts fast and behaves the
same under every test. ``integrations.sandbox.control`` is the client for its control API and
``integrations.sandbox.process`` starts it as a subprocess. See ``README.md`` beside this file.
"""
