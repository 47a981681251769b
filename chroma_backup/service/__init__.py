"""The long-running callers: the daemon behind ``python main.py run`` and its HTTP server.

- ``daemon``: the scheduler loop (``schedule``), one ``worker`` per kind of job, shutdown
  (``signals``), the ``dependencies`` probe
- ``api``: the HTTP server (status page, JSON API, ``/metrics``, ``/healthz``); ``tasks`` runs the
  backups and restores it is asked for
- ``metrics``: the Prometheus metrics
"""
