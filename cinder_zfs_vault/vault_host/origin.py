"""Read-only iSCSI export of a vault zvol: the origin of a lazy replica.

Cinder's ``cinder-rtstool`` has no read-only export, so this uses the same
library it wraps, ``rtslib-fb`` (LIO): a block backstore opened read-only,
one target per volume, an ACL for the compute host's initiator with CHAP
credentials and a write-protected mapped LUN. It runs on the vault host.
"""

import collections

from oslo_log import log as logging

from cinder_zfs_vault import protocol
from cinder_zfs_vault import validation

LOG = logging.getLogger(__name__)

IQN_PREFIX = protocol.ORIGIN_IQN_PREFIX

#: What the compute host needs to log in (os-brick iSCSI properties).
Export = collections.namedtuple('Export', 'iqn properties')


def _rtslib():
    import rtslib_fb  # only on vault hosts, where LIO runs
    return rtslib_fb


class OriginExporter(object):
    """Creates and removes read-only origin targets with rtslib.

    :param portal_ip: address the compute hosts reach the vault on.
    :param port: iSCSI port.
    """

    def __init__(self, portal_ip, port=3260):
        self.portal_ip = portal_ip
        self.port = int(port)

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
        for target in root.targets:
            if target.wwn == iqn:
                target.delete()
        for store in root.storage_objects:
            if store.name == 'zv-' + name:
                store.delete()

    def exported_iqns(self):
        """IQNs of every origin export on this vault host."""
        return [t.wwn for t in _rtslib().RTSRoot().targets
                if t.wwn.startswith(IQN_PREFIX)]

    def exported(self, name):
        iqn = self.iqn(name)
        return any(t.wwn == iqn for t in _rtslib().RTSRoot().targets)
