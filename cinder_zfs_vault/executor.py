"""Command executors: how the core runs ``zfs``, ``zpool`` and friends.

Every layer takes an executor instead of calling ``subprocess`` itself, so the
same code runs for real on its own host or against a recorded executor in
unit tests. (Nothing runs a command on another host: a compute host asks the
vault through its endpoint, compute_host/vault_client.py.) An executor is any
callable::

    executor(*argv, check_exit_code=True, process_input=None)
        -> (stdout, stderr)

that raises ``oslo_concurrency.processutils.ProcessExecutionError`` when the
command exits with a status not in ``check_exit_code``. Arguments are always
passed as a list; no shell string is built from input.
"""

from oslo_concurrency import processutils
from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class LocalExecutor(object):
    """Runs commands on this host through ``processutils.execute``.

    :param root_helper: command prefix that gives root (rootwrap or sudo);
        ignored when the process already runs as root (processutils only
        applies it for non-root users).
    :param execute: the execute function to call; Cinder passes its own
        ``cinder.utils.execute`` so that rootwrap is configured as usual.
    """

    def __init__(self, root_helper=None, execute=None):
        self._root_helper = root_helper
        self._execute = execute or processutils.execute

    def __call__(self, *argv, check_exit_code=True, process_input=None):
        kwargs = {'run_as_root': True,
                  'check_exit_code': check_exit_code,
                  'process_input': process_input}
        if self._root_helper:
            kwargs['root_helper'] = self._root_helper
        return self._execute(*argv, **kwargs)

    def stream_argv(self, argv):
        """argv of a streaming command (one end of ``zfs send | recv``).

        Local: the command itself (run as root by the caller, the agent).
        """
        return list(argv)
