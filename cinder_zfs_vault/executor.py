"""Command executors: how the core runs ``zfs``, ``zpool`` and friends.

Every layer takes an executor instead of calling ``subprocess`` itself, so the
same code runs on the vault host, over SSH to a remote vault, or against a
recorded executor in unit tests. An executor is any callable::

    executor(*argv, check_exit_code=True, process_input=None)
        -> (stdout, stderr)

that raises ``oslo_concurrency.processutils.ProcessExecutionError`` when the
command exits with a status not in ``check_exit_code``. Arguments are always
passed as a list; no shell string is built from input.
"""

import shlex

from oslo_concurrency import processutils
from oslo_log import log as logging

from cinder_zfs_vault import exception

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


class SSHExecutor(object):
    """Runs commands on a remote vault host over SSH with checked host keys.

    Connections come from Cinder's ``SSHPool`` (paramiko), made on first use;
    with ``strict_ssh_host_key_policy = true`` (recommended) an unknown host
    key is refused. The private key is RSA (PEM), as SSHPool loads it. Each
    argument is quoted with ``shlex.quote`` before it crosses the remote
    shell.

    :param host: vault host name or address.
    :param port: SSH port.
    :param login: remote user (root, or one allowed to run zfs).
    :param private_key: path of the private key file.
    :param conn_timeout: seconds to wait for a connection.
    """

    def __init__(self, host, port=22, login='root', private_key=None,
                 password=None, conn_timeout=30, pool_size=4,
                 known_hosts=None):
        from cinder import ssh_utils  # heavy import, only when used
        self._pool = ssh_utils.SSHPool(host, port, conn_timeout, login,
                                       password=password,
                                       privatekey=private_key,
                                       min_size=0, max_size=pool_size)
        self.host = host
        self._ssh = ['ssh', '-p', str(port), '-l', login,
                     '-o', 'BatchMode=yes',
                     '-o', 'StrictHostKeyChecking=yes',
                     '-o', 'ConnectTimeout=%d' % conn_timeout,
                     # A dead peer ends the stream (transfer.pipe then
                     # reports it) instead of hanging it.
                     '-o', 'ServerAliveInterval=15',
                     '-o', 'ServerAliveCountMax=4']
        if private_key:
            self._ssh += ['-i', private_key]
        if known_hosts:
            self._ssh += ['-o', 'UserKnownHostsFile=' + known_hosts]

    def stream_argv(self, argv):
        """argv that runs a streaming command on the vault over OpenSSH.

        ``zfs send`` and ``zfs recv`` stream through OpenSSH (faster than
        paramiko for bulk data), with the same host key checking: only keys
        in ``known_hosts`` are accepted, never added. Each argument is
        quoted for the remote shell.
        """
        return self._ssh + [self.host, '--', ' '.join(
            shlex.quote(str(a)) for a in argv)]

    def __call__(self, *argv, check_exit_code=True, process_input=None):
        if process_input is not None:
            raise ValueError('SSHExecutor does not feed standard input')
        command = ' '.join(shlex.quote(str(a)) for a in argv)
        try:
            connection = self._pool.item()
            ssh = connection.__enter__()
        except Exception as e:
            # An unknown host key (RejectPolicy), a refused login, a timeout.
            raise exception.CommandFailed(
                'cannot reach the vault %s over SSH: %s' % (self.host, e))
        try:
            return processutils.ssh_execute(ssh, command,
                                            check_exit_code=check_exit_code)
        finally:
            connection.__exit__(None, None, None)
