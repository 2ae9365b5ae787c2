"""The one exception type for user mistakes: the CLI prints its message as one line and exits non-zero."""
import errno


class UserError(Exception):
    """A problem with the job's input that the user can fix; the message names the problem and the fix."""


#: Exit codes of `landscape` / plot_surface.py (documented in README.md).
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 75  # stopped by SIGTERM/SIGUSR1/SIGINT: the file is consistent, rerun to resume


def storage_problem(exc: OSError) -> str | None:
    """'no space left on device' and the like for file-system errors (h5py's included), else None."""
    text = str(exc).lower()
    for code, words in ((errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
                        (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")):
        if exc.errno == code or words in text:
            return words
    return None


class SharedUserError(UserError):
    """A UserError that every rank of an MPI job raises alike: only rank 0 prints it."""
