"""Typed errors of the core.

The ZFS layer maps the CLI's messages (``zfs(8)``, ``zpool(8)``) onto these
classes so that callers decide on meaning, not on strings; the Cinder driver
maps them onto Cinder's exceptions.
"""


class ZFSVaultError(Exception):
    """Base of every error raised by the core."""

    def __init__(self, message, command=None, stderr=None):
        super().__init__(message)
        self.message = message
        self.command = command
        self.stderr = stderr


class InvalidInput(ZFSVaultError):
    """A name, size or attribute was refused before any command ran."""


class NotFound(ZFSVaultError):
    """The dataset, snapshot or pool does not exist."""


class AlreadyExists(ZFSVaultError):
    """A dataset of that name exists already."""


class Busy(ZFSVaultError):
    """The dataset is open (exported, mapped or mounted) and cannot change."""


class HasDependents(ZFSVaultError):
    """The dataset or snapshot has clones or children that depend on it."""


class OutOfSpace(ZFSVaultError):
    """The pool cannot hold the requested size."""


class CommandFailed(ZFSVaultError):
    """A command failed for a reason the core does not classify."""


class CommandTimedOut(CommandFailed):
    """A command or a wait outlasted its timeout (and was stopped)."""


class Preempted(CommandFailed):
    """A periodic stream gave way before the vault granted it a slot.

    A caller waits on the same disk (a detach, a snapshot's sync point):
    it takes the disk's flow lock and the slot kept for it instead.
    """


class Diverged(ZFSVaultError):
    """The receiving side changed since the common snapshot.

    A receive would have to roll it back, which we never do silently.
    """
