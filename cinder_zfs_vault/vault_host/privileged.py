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

"""What cinder-volume's driver does as root on the vault: lease changes.

cinder-volume runs as Cinder's own user, as packaged Cinder runs; its
``zfs`` commands pass cinder-rootwrap with this project's filters
(rootwrap.py). Granting, revoking and breaking a lease need more than a
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

from oslo_privsep import capabilities
from oslo_privsep import priv_context

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


def _executor(timeout):
    """Commands of the daemon: root's own, no rootwrap (a test's seam)."""
    return executors.LocalExecutor(timeout=timeout)


def _authority(where):
    root, state_path, portal_ip, port, timeout = where
    return authoritylib.Authority(
        zfslib.ZFS(_executor(timeout)),
        origin.OriginExporter(portal_ip, port), root, state_path)


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
def target_exists(target_iqn):
    """acls.target_exists, as root (rtslib reads configfs)."""
    return acls.target_exists(target_iqn)


@vault_pctxt.entrypoint
def initiators(target_iqn):
    """acls.initiators, as root. :returns: IQNs (list)."""
    return acls.initiators(target_iqn)


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
    :param timeout: seconds each command of the daemon may take.
    """

    def __init__(self, root, state_path, portal_ip, port, timeout):
        self._where = (root, state_path, portal_ip, port, timeout)

    def grant(self, volume_id, host):
        return tuple(grant(self._where, volume_id, host))

    def revoke(self, volume_id, host, abandon=False):
        revoke(self._where, volume_id, host, abandon)

    def break_lease(self, volume_id):
        broken = break_lease(self._where, volume_id)
        # msgpack gives lists for the tuples of hosts.
        return leaselib.Lease(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in broken.items()})
