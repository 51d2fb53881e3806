"""Read-only iSCSI export of a vault zvol: the origin of a lazy replica.

Cinder's ``cinder-rtstool`` has no read-only export, so this uses the same
library it wraps, ``rtslib-fb`` (LIO): a block backstore opened read-only,
one target per volume, an ACL for the compute host's initiator with CHAP
credentials and a write-protected mapped LUN. It runs on the vault host.
"""

import collections
import json

from oslo_log import log as logging

from cinder_zfs_vault import protocol
from cinder_zfs_vault import validation
from cinder_zfs_vault.vault_host import acls
from cinder_zfs_vault import zfs as zfslib

LOG = logging.getLogger(__name__)

IQN_PREFIX = protocol.ORIGIN_IQN_PREFIX

#: What the compute host needs to log in (os-brick iSCSI properties).
Export = collections.namedtuple('Export', 'iqn properties')

#: LIO keeps its configuration in configfs, which a reboot empties. Each
#: change is saved where ``cinder-rtstool save`` (Cinder's lioadm target
#: helper) saves it, rtslib's default, so that one file holds the vault
#: host's whole LIO configuration whichever of the two changed it last.
SAVE_FILE = '/etc/target/saveconfig.json'


def _rtslib():
    return acls.rtslib()


class OriginExporter(object):
    """Creates and removes read-only origin targets with rtslib.

    :param portal_ip: address the compute hosts reach the vault on.
    :param port: iSCSI port.
    :param save_file: where LIO's configuration is saved at each change
        (:data:`SAVE_FILE`), for :meth:`restore` after a reboot.
    :param device_timeout: seconds :meth:`restore` waits for a zvol's
        device to appear.
    """

    def __init__(self, portal_ip, port=3260, save_file=SAVE_FILE,
                 device_timeout=60):
        self.portal_ip = portal_ip
        self.port = int(port)
        self.save_file = save_file
        self.device_timeout = device_timeout

    @staticmethod
    def iqn(name):
        return protocol.origin_iqn(name)

    def export(self, name, device, initiator, user, password,
               readonly=True):
        """Export ``device`` to ``initiator`` with CHAP, read-only by default.

        Read-write only for a disk in non-sync mode (the VM writes the
        vault zvol itself, under its lease).

        An existing export of ``name`` is removed first, so a retry ends in
        the same state. :returns: :data:`Export`.
        :raises InvalidInput: ``initiator`` is not an iSCSI name
            (:func:`~cinder_zfs_vault.validation.initiator`); nothing ran.
        """
        validation.initiator(initiator)
        rts = _rtslib()
        iqn = self.iqn(name)
        self.unexport(name)
        store = rts.BlockStorageObject('zv-' + name, dev=device,
                                       readonly=readonly)
        try:
            target = rts.Target(rts.FabricModule('iscsi'), iqn, 'create')
            tpg = rts.TPG(target, 1)
            rts.NetworkPortal(tpg, self.portal_ip, self.port)
            lun = rts.LUN(tpg, 0, store)
            acl = rts.NodeACL(tpg, initiator)
            acl.chap_userid = user
            acl.chap_password = password
            rts.MappedLUN(acl, 0, lun, write_protect=readonly)
            tpg.set_attribute('authentication', '1')
            tpg.enable = True
        except Exception:
            self.unexport(name)
            raise
        self._save(rts)
        props = {'target_discovered': False,
                 'target_iqn': iqn,
                 'target_portal': '%s:%d' % (self.portal_ip, self.port),
                 'target_lun': 0,
                 'auth_method': 'CHAP',
                 'auth_username': user,
                 'auth_password': password,
                 'access_mode': 'ro' if readonly else 'rw'}
        LOG.info('Exported %s %s as %s to %s.', device,
                 'read-only' if readonly else 'read-write', iqn, initiator)
        return Export(iqn, props)

    def unexport(self, name):
        """Remove the export of ``name`` if there is one (idempotent)."""
        rts = _rtslib()
        iqn = self.iqn(name)
        root = rts.RTSRoot()
        gone = False
        for target in root.targets:
            if target.wwn == iqn:
                target.delete()
                gone = True
        for store in root.storage_objects:
            if store.name == 'zv-' + name:
                store.delete()
                gone = True
        if gone:
            self._save(rts)

    def _save(self, rts):
        rts.RTSRoot().save_to_file(self.save_file)

    def restore(self):
        """Export again the origins that a reboot of this host took away.

        Each origin target saved in :attr:`save_file` and missing from LIO
        is restored with its backstore (rtslib's ``RTSRoot.restore`` of a
        configuration holding just those two), CHAP and ACL included, so
        a compute host's iSCSI session logs in again by itself. Other
        targets are left to their owner (Cinder's target helper restores
        its own in ``ensure_export``). Called when the endpoint server
        starts. :returns: the IQNs restored.
        """
        rts = _rtslib()
        try:
            with open(self.save_file) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return []
        root = rts.RTSRoot()
        live = {t.wwn for t in root.targets}
        stores = {s['name']: s for s in saved.get('storage_objects', [])}
        restored = []
        for target in saved.get('targets', []):
            iqn = target.get('wwn', '')
            if not iqn.startswith(IQN_PREFIX) or iqn in live:
                continue
            store = stores.get('zv-' + iqn[len(IQN_PREFIX):])
            if not store:
                continue
            try:
                # At boot a zvol's link may come after the pool's import.
                zfslib.wait_for_zvol(store.get('dev', ''),
                                     self.device_timeout, interval=0.5)
                errors = root.restore({'storage_objects': [store],
                                       'targets': [target]})
            except Exception as e:  # one bad entry must not stop the rest
                LOG.error('Origin %s not restored: %s', iqn, e)
                continue
            if errors:
                LOG.warning('Origin %s restored with errors: %s', iqn,
                            '; '.join(errors))
            LOG.info('Origin %s exported again after a restart.', iqn)
            restored.append(iqn)
        return restored

    def exported_iqns(self):
        """IQNs of every origin export on this vault host."""
        return [t.wwn for t in _rtslib().RTSRoot().targets
                if t.wwn.startswith(IQN_PREFIX)]

    def exported(self, name):
        return acls.target_exists(self.iqn(name))
