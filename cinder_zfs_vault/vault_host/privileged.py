# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""What cinder-volume's driver does as root on the vault.

cinder-volume runs as Cinder's own user, as packaged Cinder runs. Its
``zfs`` commands run in an oslo.privsep daemon of this project's own
(:func:`zfs`), each checked there against the rootwrap filters the
operator installed (rootwrap.py: these subcommands, on datasets under the
backend's root) with oslo.rootwrap's own matcher, as cinder-rootwrap
would check it: the same commands are allowed, without a ``sudo
cinder-rootwrap`` process (a Python start) per command, which made an
attach through Cinder's API 1.7 times as long in the lab (TCG guests).
Granting, revoking and breaking a lease need more than a
command each: the lease lock files it shares with the endpoint server
(root's, under ``zfs_vault_state_path``), a kill of root's ``zfs
receive`` in flight and ``zfs receive -A``/``rollback -r`` of what it
left (a break), LIO's configfs (the origin export a break removes, the
ACLs a force detach reads). They run in an oslo.privsep daemon of this
project's own, as Cinder's ``cinder.privsep.sys_admin_pctxt`` runs
cinder-rtstool: cinder-volume starts it once through cinder-rootwrap,
whose filter names this context (``zfs-vault-rootwrap-filters`` prints
it), and calls the functions below over its socket. As root (the lab's
driver tests, the CLI), ``vault_pctxt.set_client_mode(False)`` runs them
in-process.

Only functions decorated with ``vault_pctxt.entrypoint`` run as root;
their arguments and answers cross the socket (msgpack: plain values).
The errors they raise cross it as their own class (``e.args``).
"""

import configparser
import functools

from oslo_concurrency import processutils
from oslo_privsep import capabilities
from oslo_privsep import comm
from oslo_privsep import priv_context
from oslo_rootwrap import wrapper

from cinder_zfs_vault import exception
from cinder_zfs_vault import executor as executors
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault.vault_host import acls
from cinder_zfs_vault.vault_host import authority as authoritylib
from cinder_zfs_vault.vault_host import origin
from cinder_zfs_vault import zfs as zfslib

#: The context's dotted path, which the rootwrap filter names.
CONTEXT = __name__ + '.vault_pctxt'

vault_pctxt = priv_context.PrivContext(
    'cinder_zfs_vault',
    cfg_section='zfs_vault_privileged',
    pypath=CONTEXT,
    # As Cinder's sys_admin_pctxt (configfs, files of root's), and a kill
    # of root's zfs receive; the zfs commands it runs are root's processes.
    capabilities=[capabilities.CAP_CHOWN,
                  capabilities.CAP_DAC_OVERRIDE,
                  capabilities.CAP_DAC_READ_SEARCH,
                  capabilities.CAP_FOWNER,
                  capabilities.CAP_KILL,
                  capabilities.CAP_SYS_ADMIN],
)


#: cinder-rootwrap's configuration (Cinder's ``rootwrap_config`` default,
#: the file the sudoers line names): its ``filters_path`` and ``exec_dirs``
#: say what :func:`zfs` may run, as they say what cinder-rootwrap may.
ROOTWRAP_CONFIG = '/etc/cinder/rootwrap.conf'


#: Seconds a call of :func:`zfs` may take beyond its command's timeout
#: (the kill and reap of a command that outlived it, the socket).
CALL_SLACK = executors.REAP_TIMEOUT + 20
#: Commands a lease change may run in the daemon, each within the
#: command timeout, besides its wait for the lease's lock: a break's kill
#: and ``zfs receive -A``/``rollback -r``, the lease's properties, the
#: releases of the sync points' holds (the vault keeps 3).
LEASE_STEPS = 10
#: Seconds a configfs read (:func:`target_exists`, :func:`initiators`)
#: may take, the socket included.
READ_CALL_TIMEOUT = 60


def _bounded(what, seconds, entrypoint, *args):
    """Call ``entrypoint`` in the daemon; no answer in ``seconds`` fails.

    oslo.privsep waits for ever by default (the context has no timeout).
    :param what: the call, for the error's message.
    :raises CommandTimedOut: the daemon gave no answer in ``seconds``.
    """
    try:
        return entrypoint(*args, _wrap_timeout=seconds)
    except comm.PrivsepTimeout:
        raise exception.CommandTimedOut(
            '%s: the privsep daemon did not answer in %ss'
            % (what, seconds)) from None


def _executor(timeout):
    """Commands of the daemon: root's own, no rootwrap (a test's seam)."""
    return executors.LocalExecutor(timeout=timeout)


def _authority(where):
    root, state_path, portal_ip, port, timeout = where
    return authoritylib.Authority(
        zfslib.ZFS(_executor(timeout)),
        origin.OriginExporter(portal_ip, port), root, state_path)


@functools.lru_cache(maxsize=1)
def _rootwrap(path):
    """(filters, exec_dirs) of the rootwrap configuration at ``path``.

    Read once per daemon, as the daemon lives as long as cinder-volume: a
    change to the filters takes a restart of cinder-volume.
    """
    parser = configparser.RawConfigParser()
    if not parser.read(path):
        raise exception.CommandFailed('cannot read %s' % path)
    config = wrapper.RootwrapConfig(parser)
    return wrapper.load_filters(config.filters_path), config.exec_dirs


def _admitted(argv):
    """``argv`` with its executable as the filters resolve it.

    :raises InvalidInput: not a ``zfs`` command, or one no filter admits
        (cinder-rootwrap would refuse it the same way).
    """
    if argv[:1] != ['zfs']:
        raise exception.InvalidInput('not a zfs command: %s' % argv[:1])
    filters, exec_dirs = _rootwrap(ROOTWRAP_CONFIG)
    try:
        match = wrapper.match_filter(filters, argv, exec_dirs)
    except (wrapper.NoFilterMatched, wrapper.FilterMatchNotExecutable):
        raise exception.InvalidInput(
            'no rootwrap filter admits %s' % ' '.join(argv)) from None
    return match.get_command(argv, exec_dirs)


@vault_pctxt.entrypoint
def zfs(argv, timeout):
    """Run one ``zfs`` command the rootwrap filters admit, as root.

    :param argv: the command (list of str), ``zfs`` first.
    :param timeout: seconds it may run before it is killed.
    :returns: (exit status, stdout, stderr); the caller judges the status
        (a ProcessExecutionError would cross the socket with its message
        only).
    :raises InvalidInput: no filter admits it (nothing ran).
    :raises CommandTimedOut: killed after ``timeout``.
    """
    command = _admitted([str(a) for a in argv])
    try:
        out, err = _executor(timeout)(*command)
    except processutils.ProcessExecutionError as e:
        return e.exit_code, e.stdout, e.stderr
    return 0, out, err


class ZFSExecutor(object):
    """The driver's executor for ``zfs``, unprivileged: :func:`zfs`.

    Called as :class:`~cinder_zfs_vault.executor.LocalExecutor` is.

    :param timeout: seconds each command may run.
    """

    def __init__(self, timeout):
        self.timeout = timeout

    def __call__(self, *argv, check_exit_code=True):
        """:returns: (stdout, stderr).

        :raises ProcessExecutionError: an exit status not in
            ``check_exit_code`` (True: 0 only; False: any; or a list).
        :raises CommandTimedOut: the daemon gave no answer in ``timeout`` +
            :data:`CALL_SLACK` seconds.
        """
        # The call bounded too, not only the command: a daemon that stops
        # answering must not hold cinder-volume for ever.
        status, out, err = _bounded(
            ' '.join(str(a) for a in argv), self.timeout + CALL_SLACK,
            zfs, list(argv), self.timeout)
        if check_exit_code is True:
            check_exit_code = [0]
        if check_exit_code is not False and status not in check_exit_code:
            raise processutils.ProcessExecutionError(
                stdout=out, stderr=err, exit_code=status,
                cmd=' '.join(str(a) for a in argv))
        return out, err


@vault_pctxt.entrypoint
def grant(where, volume_id, host):
    """Authority.grant, as root. :returns: the hosts granted (list)."""
    return list(_authority(where).grant(volume_id, host))


@vault_pctxt.entrypoint
def revoke(where, volume_id, host, abandon):
    """Authority.revoke, as root."""
    _authority(where).revoke(volume_id, host, abandon=abandon)


@vault_pctxt.entrypoint
def break_lease(where, volume_id):
    """Authority.break_lease, as root. :returns: the broken lease (dict)."""
    return _authority(where).break_lease(volume_id)._asdict()


@vault_pctxt.entrypoint
def _target_exists(target_iqn):
    return acls.target_exists(target_iqn)


@vault_pctxt.entrypoint
def _initiators(target_iqn):
    return list(acls.initiators(target_iqn))


def target_exists(target_iqn):
    """acls.target_exists, as root (rtslib reads configfs).

    :raises CommandTimedOut: no answer in :data:`READ_CALL_TIMEOUT` s.
    """
    return _bounded('target_exists ' + target_iqn, READ_CALL_TIMEOUT,
                    _target_exists, target_iqn)


def initiators(target_iqn):
    """acls.initiators, as root. :returns: IQNs (list).

    :raises CommandTimedOut: no answer in :data:`READ_CALL_TIMEOUT` s.
    """
    return _bounded('initiators ' + target_iqn, READ_CALL_TIMEOUT,
                    _initiators, target_iqn)


class VaultAuthority(object):
    """The driver's view of the vault's Authority: its lease changes, as root.

    Same calls and answers as
    :class:`~cinder_zfs_vault.vault_host.authority.Authority`'s ``grant``,
    ``revoke`` and ``break_lease``, made in the privsep daemon over the
    same lease locks as the endpoint server (``state_path``).

    :param root: the vault's root dataset (``zfs_vault_dataset``).
    :param state_path: the endpoint's state directory
        (``zfs_vault_state_path``).
    :param portal_ip: the vault's iSCSI portal; ``port`` its TCP port.
    :param timeout: seconds each command of the daemon may take; a call
        gets the lease lock's wait, :data:`LEASE_STEPS` commands and
        :data:`CALL_SLACK`, and raises CommandTimedOut past them.
    """

    def __init__(self, root, state_path, portal_ip, port, timeout):
        self._where = (root, state_path, portal_ip, port, timeout)
        self._call_timeout = (authoritylib.LOCK_TIMEOUT
                              + LEASE_STEPS * timeout + CALL_SLACK)

    def _call(self, name, entrypoint, volume_id, *args):
        return _bounded('%s of volume %s' % (name, volume_id),
                        self._call_timeout, entrypoint, self._where,
                        volume_id, *args)

    def grant(self, volume_id, host):
        return tuple(self._call('grant', grant, volume_id, host))

    def revoke(self, volume_id, host, abandon=False):
        self._call('revoke', revoke, volume_id, host, abandon)

    def break_lease(self, volume_id):
        broken = self._call('break_lease', break_lease, volume_id)
        # msgpack gives lists for the tuples of hosts.
        return leaselib.Lease(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in broken.items()})
