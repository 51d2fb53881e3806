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

No command may run for ever: a wedged ``zfs`` or ``dmsetup`` would hold
its flow's lock and transfer slot, and inside a cut-over the VM's device
suspended. :class:`LocalExecutor` kills a command after ``timeout`` seconds
(the ``command_timeout`` options, opts.py) and raises
:class:`~cinder_zfs_vault.exception.CommandTimedOut`; the flow fails and
stays resumable.
"""

from oslo_concurrency import processutils
from oslo_log import log as logging

from cinder_zfs_vault import exception

LOG = logging.getLogger(__name__)

#: Seconds one command may run (the options' default, opts.py).
COMMAND_TIMEOUT = 300
#: Seconds a killed command gets to go (one in the kernel's D state never
#: does; it is left, and the error says so).
REAP_TIMEOUT = 10


class LocalExecutor(object):
    """Runs commands on this host through ``processutils.execute``.

    :param root_helper: command prefix that gives root (rootwrap or sudo);
        ignored when the process already runs as root (processutils only
        applies it for non-root users).
    :param execute: the execute function to call; Cinder passes its own
        ``cinder.utils.execute`` so that rootwrap is configured as usual.
    :param timeout: seconds a command may run before it is killed.
    """

    def __init__(self, root_helper=None, execute=None,
                 timeout=COMMAND_TIMEOUT):
        self._root_helper = root_helper
        self._execute = execute or processutils.execute
        self.timeout = timeout

    def __call__(self, *argv, check_exit_code=True, process_input=None):
        """Run ``argv``. :returns: (stdout, stderr).

        :raises ProcessExecutionError: an exit status not in
            ``check_exit_code``.
        :raises CommandTimedOut: still running after ``timeout`` seconds
            (then killed).
        """
        started = []
        kwargs = {'run_as_root': True,
                  'check_exit_code': check_exit_code,
                  'process_input': process_input,
                  'timeout': self.timeout,
                  'on_execute': started.append}
        if self._root_helper:
            kwargs['root_helper'] = self._root_helper
        try:
            return self._execute(*argv, **kwargs)
        except Exception as e:
            if not timed_out(e):
                raise
            # processutils leaves the child running (subprocess does).
            gone = all(_kill(child) for child in started)
            raise exception.CommandTimedOut(
                '%s did not finish in %ss; %s' % (
                    ' '.join(str(a) for a in argv), self.timeout,
                    'killed' if gone else 'killed, but it does not exit '
                    '(stuck in the kernel?)'))

    def stream_argv(self, argv):
        """argv of a streaming command (one end of ``zfs send | recv``).

        Local: the command itself (run as root by the caller, the agent).
        """
        return list(argv)


def timed_out(error):
    """Whether ``error`` is a ``subprocess.TimeoutExpired``.

    By name: in an eventlet-patched process (cinder-volume) processutils
    runs eventlet's copy of the subprocess module, whose TimeoutExpired is
    another class than the one imported here.
    """
    return type(error).__name__ == 'TimeoutExpired'


def _kill(child):
    """SIGKILL ``child`` and reap it. :returns: False if it stays."""
    try:
        child.kill()
    except OSError:
        pass  # gone already, or not ours to signal (sudo)
    try:
        child.communicate(timeout=REAP_TIMEOUT)
    except Exception as e:
        if not timed_out(e):
            raise
        return False
    return True
