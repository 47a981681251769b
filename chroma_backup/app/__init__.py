"""The operations layer: opens the stores from ``Settings``, runs rounds, returns result objects.

- ``runtime``: ``Backend``, what one process shares (settings, the embedded PostgreSQL)
- ``stores``: one thread's stores, opened lazily with bounded retries (``retry``)
- ``names``: which collection a name means, and how collections are named in output
- ``rounds``: the backup and health rounds, each collection isolated
- ``operations``: ``Operations``, the facade every caller uses
- ``overview``: the status page's rows
- ``demo``: the self-contained backup -> failure -> recovery run
"""
