"""The reporting export service: the adapters and entrypoints around :mod:`reportcore`.

Named for the service (and its console script) so that installing it adds no top-level
package a PyPI distribution already owns (``entrypoints`` is one).
"""
