"""Pure X.509 helpers: key types, names, certificate profiles, CSR checks, summaries.

Nothing here does I/O or imports the rest of trustyard except ``errors``/``units``.
"""
