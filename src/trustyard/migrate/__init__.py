"""Migrating off self-signed certificates: the plan (``plan``), client trust locations in
their own formats (``locations``), crash-safe file writes (``journal``), the states and their
checks (``steps``), live verification (``verify``); the estate ``trustyard migrate demo``
builds to try it on (``demo``, its programs in ``scripts``)."""
