"""The one error tree of the program.

The doors (``chroma_backup.postgres``, ``chroma_backup.chroma``) translate driver errors into these
classes; the domain raises them; ``main()`` alone turns them into exit codes.  ``transient`` marks
errors worth retrying (the service may come back); everything else fails the run at once.
"""


class BackupError(Exception):
    """Base of every error this program raises on purpose."""

    exit_code = 1
    transient = False


class ConfigError(BackupError):
    """A setting or command-line value is invalid (exit code 2)."""

    exit_code = 2


class UsageError(BackupError):
    """The command line asks for something that cannot be done as asked (exit code 2)."""

    exit_code = 2


class ChromaUnavailable(BackupError):
    """The Chroma server cannot be reached (refused, reset, timed out, 502/503/504)."""

    transient = True


class PostgresUnavailable(BackupError):
    """PostgreSQL cannot be reached or the connection was lost."""

    transient = True


class ChromaFailure(BackupError):
    """The Chroma server answered with an error for a collection (a damaged index, say)."""


class CollectionNotFound(BackupError):
    """The named Chroma collection does not exist."""


class DatabaseNotFound(CollectionNotFound):
    """The tenant or database does not exist on the Chroma server (so neither do its collections)."""


class CollectionExists(BackupError):
    """The restore target exists and --overwrite was not given."""


class CollectionBusy(BackupError):
    """Another backup or restore of the same collection holds its lock."""


class SnapshotNotFound(BackupError):
    """No snapshot matches the request."""


class VerificationFailed(BackupError):
    """A restored or live collection does not match its snapshot."""


class Interrupted(BackupError):
    """A shutdown was requested while a run was in progress."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when it has none): what one log line
    or one error line may quote."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SwapFailed(BackupError):
    """An overwrite could not put the verified copy in place; the message says which collection
    holds the target's name."""


def unexpected(error: BaseException) -> str:
    """One line for an error that is not ours (a bug or a library surprise) at a job boundary."""
    return f"unexpected {type(error).__name__}: {first_line(error)}"
