"""The words the program records and reports, in one place: health verdicts, run statuses,
recovery actions, restore triggers.  Stores, domain, operations layer, CLI, daemon and metrics all
use these names, so a status is spelled once."""

from __future__ import annotations

# Health verdicts (README "Health states"), in ladder order.
OK = "ok"
UNREACHABLE = "unreachable"
MISSING = "missing"
CORRUPT = "corrupt"
SHRUNK = "shrunk"
# Missing, but a verified restore made since it was last seen holds its data under another name:
# handled, not an alarm (until the original comes back or leaves the selection).
RECOVERED_INTO = "recovered"
HEALTH_STATUSES = (OK, UNREACHABLE, MISSING, CORRUPT, SHRUNK, RECOVERED_INTO)
HEALTHY = (OK, RECOVERED_INTO)  # nothing for an operator to do: exit 0, no alert
GONE = (MISSING, RECOVERED_INTO)  # the collection does not exist: nothing to back up
PRESENT = (OK, CORRUPT, SHRUNK)  # verdicts that saw the collection
RESTORABLE = (MISSING, CORRUPT, SHRUNK)

# Snapshot and restore run statuses (the catalog's CHECK constraints use the same words).
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
SKIPPED = "skipped"  # a backup round's result for a collection another process is working on

# What a recovery did.  RECOVERED actions leave a good copy in place; the rest need an operator.
RESTORED = "restored"
ALREADY_RESTORED = "already_restored"
RECOVERED_ITSELF = "recovered_itself"
BLOCKED = "blocked"
NO_SNAPSHOT = "no_snapshot"
RECOVERY_FAILED = "failed"
ELSEWHERE = "elsewhere"  # another process (a replica) holds the collection's lock: it is recovering it
RECOVERED = (RESTORED, ALREADY_RESTORED, RECOVERED_ITSELF, ELSEWHERE)

# What a whole-server restore (``restore --all``) plans for a collection; a planned collection's
# outcome is RESTORED or FAILED once it ran, its action when nothing was done for it.
RESTORE = "restore"
OVERWRITE = "overwrite"
CONFLICT = "conflict"  # the target exists: neither --overwrite nor --skip-existing
SKIP_EXISTING = "skip_existing"
LEFT_OUT = "left_out"  # not part of the server any more (the detail says why)
# (ALREADY_RESTORED and NO_SNAPSHOT above are used too)

# Who asked for a restore.
TRIGGER_CLI = "cli"
TRIGGER_AUTO = "auto"
