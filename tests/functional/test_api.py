"""The driver through Cinder's front door: cinder-api, its scheduler and
cinder-volume (tools/lab_cinder.py), driven with openstacksdk as a user or
nova would. Every volume here goes through Cinder's manager, as in
production: the defects of issue 9 that calling the driver directly hid
are tested here.
"""

import os

from openstack import exceptions as openstack_exceptions
from oslo_utils import units
from oslo_utils import uuidutils
from testtools import content as testtools_content

from cinder_zfs_vault import attributes
from tests.functional import base
from tools import lab_cinder
from tools import labkit

MiB = units.Mi
#: Seconds a volume or snapshot may take to reach a status (TCG guest).
WAIT = 300


def tearDownModule():
    """Cinder's services stop once this module's tests are done.

    The API tests run first in the lab (test_api sorts first); the
    services' periodic work would slow every later test.
    """
    labkit.vault_lab().stop_cinder()


class APITestCase(base.FunctionalTestCase):

    def setUp(self):
        super(APITestCase, self).setUp()
        self.vault_lab.ensure_cinder()
        self.addOnException(self._cinder_logs)
        self.api = lab_cinder.client().block_storage
        self.volume_type()

    def _cinder_logs(self, exc_info):
        for name, text in self.vault_lab.cinder_logs().items():
            self.addDetail('cinder/' + name,
                           testtools_content.text_content(text))

    def volume_type(self):
        """The backend's volume type, made once as an operator does."""
        if not self.api.find_type(lab_cinder.BACKEND):
            self.api.create_type(
                name=lab_cinder.BACKEND,
                extra_specs={'volume_backend_name': lab_cinder.BACKEND})

    def get(self, resource):
        """``resource`` (a volume or snapshot) as the API has it now."""
        if resource.resource_key == 'volume':
            return self.api.get_volume(resource)
        return self.api.get_snapshot(resource)

    def wait(self, resource, status):
        """Wait until ``resource`` has ``status``.

        It is fetched first: the object handed in may predate the request
        that changed it (sdk would return it at once).
        """
        return self.api.wait_for_status(self.get(resource), status,
                                        failures=['error', 'error_deleting',
                                                  'error_extending',
                                                  'error_restoring'],
                                        interval=2, wait=WAIT)

    def wait_until(self, vol, attribute, value):
        """Poll volume ``vol`` until its ``attribute`` is ``value``."""
        def check():
            found = self.api.get_volume(vol)
            return found if getattr(found, attribute) == value else None
        what = '%s %r of %s' % (attribute, value, vol.id)
        return self.wait_for(check, WAIT, what, interval=2)

    def create_volume(self, **kwargs):
        kwargs.setdefault('size', 1)
        vol = self.api.create_volume(**kwargs)
        self.addCleanup(self.delete, vol)
        return self.wait(vol, 'available')

    def create_snapshot(self, vol):
        snap = self.api.create_snapshot(volume_id=vol.id)
        self.addCleanup(self.delete, snap)
        return self.wait(snap, 'available')

    def delete(self, resource):
        """Delete through the API and wait until it is gone.

        After what the test left running (an extend, a revert) is done.
        """
        delete = self.api.delete_volume \
            if resource.resource_key == 'volume' else self.api.delete_snapshot
        try:
            self.api.wait_for_status(self.get(resource), 'available',
                                     failures=['error'], interval=2,
                                     wait=WAIT)
        except openstack_exceptions.NotFoundException:
            return
        except openstack_exceptions.ResourceFailure:
            pass  # deleted from 'error' too
        delete(resource, ignore_missing=True)

        def gone():
            try:
                status = self.get(resource).status
            except openstack_exceptions.NotFoundException:
                return True
            self.assertNotEqual('error_deleting', status)
            return False
        self.wait_for(gone, WAIT, 'deletion of %s' % resource.id, interval=2)

    @staticmethod
    def zvol(vol):
        return '/dev/zvol/vault/volume-' + vol.id


class VolumeAPITest(APITestCase):

    def test_create_snapshot_revert_delete(self):
        vol = self.create_volume()
        self.assertIn('vault/volume-' + vol.id, labkit.zvols())
        labkit.write_at(self.zvol(vol), 0, labkit.pattern('before', MiB))
        snap = self.create_snapshot(vol)
        labkit.write_at(self.zvol(vol), 0, labkit.pattern('after', MiB))
        # Issue 9, defect 1: the manager's temporary snapshot made the
        # driver refuse, and the volume went to 'error'.
        self.api.revert_volume_to_snapshot(vol, snap)
        self.wait(vol, 'available')
        self.assertEqual(labkit.pattern('before', MiB),
                         labkit.read_at(self.zvol(vol), 0, MiB))
        self.assertEqual(['vault/volume-%s@snapshot-%s' % (vol.id, snap.id)],
                         [z for z in labkit.zvols()
                          if z.startswith('vault/volume-%s@' % vol.id)])

    def test_clones_and_extend(self):
        vol = self.create_volume()
        labkit.write_at(self.zvol(vol), 0, labkit.pattern('origin', MiB))
        snap = self.create_snapshot(vol)
        from_snap = self.create_volume(snapshot_id=snap.id, size=2)
        clone = self.create_volume(source_volid=vol.id)
        for v in (from_snap, clone):
            self.assertEqual(labkit.pattern('origin', MiB),
                             labkit.read_at(self.zvol(v), 0, MiB))
        self.assertEqual(str(2 * units.Gi), self.prop(
            'vault/volume-' + from_snap.id, 'volsize'))
        self.api.extend_volume(vol, 3)
        self.assertEqual(3, self.wait_until(vol, 'size', 3).size)
        self.wait(vol, 'available')
        self.assertEqual(str(3 * units.Gi), self.prop(
            'vault/volume-' + vol.id, 'volsize'))

    def test_delete_a_snapshot_already_gone(self):
        # Issue 9, defect 2: it ended in error_deleting.
        vol = self.create_volume()
        snap = self.create_snapshot(vol)
        labkit.run('zfs', 'destroy', 'vault/volume-%s@snapshot-%s'
                   % (vol.id, snap.id))
        self.delete(snap)
        self.assertIsNone(self.api.find_snapshot(snap.id))

    def test_delete_with_dependents(self):
        vol = self.create_volume()
        data = os.urandom(MiB)
        labkit.write_at(self.zvol(vol), 0, data)
        snap = self.create_snapshot(vol)
        clone = self.create_volume(source_volid=vol.id)
        # Cinder's own refusal: a volume with snapshots needs cascade.
        self.assertRaises(openstack_exceptions.BadRequestException,
                          self.api.delete_volume, vol)
        self.api.delete_volume(vol, cascade=True)
        self.wait_for(lambda: self.api.find_volume(vol.id) is None, WAIT,
                      'cascade deletion of %s' % vol.id, interval=2)
        self.assertIsNone(self.api.find_snapshot(snap.id))
        # The clone shares the origin's blocks: they outlive it.
        self.assertNotIn('vault/volume-' + vol.id, labkit.zvols())
        self.assertEqual(data, labkit.read_at(self.zvol(clone), 0, MiB))


class ManageAPITest(APITestCase):

    def legacy_zvol(self, size):
        """A zvol made outside Cinder with 1 MiB of random data.

        :returns: (its name under the vault, the data).
        """
        name = 'legacy-' + uuidutils.generate_uuid()[:8]
        labkit.run('zfs', 'create', '-s', '-V', str(size), 'vault/' + name)
        self.addCleanup(labkit.run, 'zfs', 'destroy', 'vault/' + name,
                        check=False)
        data = os.urandom(MiB)
        labkit.write_at(labkit.wait_for('/dev/zvol/vault/' + name), 0, data)
        return name, data

    def manage(self, ref):
        """Manage ``ref`` on the lab's backend; deleted at cleanup.

        On ``host@backend`` as cinder-volume reports it (the scheduler
        then ignores the pool).
        """
        host, = [s.host for s in self.api.services()
                 if s.binary == 'cinder-volume']
        vol = self.api.manage_volume(host=host, ref=ref)
        self.addCleanup(self.delete, vol)
        return vol

    def test_manage_and_unmanage(self):
        name, data = self.legacy_zvol(1536 * MiB)
        vol = self.wait(self.manage({'source-name': name}), 'available')
        self.assertEqual(2, vol.size)  # 1.5 GiB, rounded up
        self.assertNotIn('vault/' + name, labkit.zvols())
        self.assertEqual(data, labkit.read_at(self.zvol(vol), 0, MiB))
        # Unmanaged: gone from Cinder, its zvol and data left in the vault.
        self.addCleanup(labkit.run, 'zfs', 'destroy',
                        'vault/volume-' + vol.id, check=False)
        self.api.unmanage_volume(vol)
        self.wait_for(lambda: self.api.find_volume(vol.id) is None, WAIT,
                      'unmanage of %s' % vol.id, interval=2)
        self.assertEqual(data, labkit.read_at(self.zvol(vol), 0, MiB))

    def test_manage_refuses_another_volumes_zvol(self):
        # Issue 9, defect 3: the rename stole the other volume's zvol.
        owner = self.create_volume()
        data = os.urandom(MiB)
        labkit.write_at(self.zvol(owner), 0, data)
        thief = self.manage({'source-name': 'volume-' + owner.id})
        self.api.wait_for_status(self.get(thief), 'error',
                                 failures=['available'], interval=2,
                                 wait=WAIT)
        # Deleting the failed manage leaves what it named alone.
        self.delete(thief)
        self.assertEqual(data, labkit.read_at(self.zvol(owner), 0, MiB))


class VolumeTypeAPITest(APITestCase):
    """Types whose ``zfs_vault:`` specs set their volumes' attributes.

    At create and at retype (issue 9, "Volume types").
    """

    def make_type(self, **specs):
        """A volume type of the lab's backend with ``zfs_vault:`` specs.

        Deleted at cleanup, after the volumes made later (cleanups run
        last first).
        """
        extra = {'volume_backend_name': lab_cinder.BACKEND}
        extra.update(('zfs_vault:' + k, v) for k, v in specs.items())
        name = 'zfsvault-%s' % uuidutils.generate_uuid()[:8]
        vtype = self.api.create_type(name=name, extra_specs=extra)
        self.addCleanup(self.api.delete_type, vtype, ignore_missing=True)
        return vtype

    def attributes(self, vol):
        """The attributes set on the volume's zvol itself (not inherited).

        :returns: {attribute: value as ``zfs get -p`` shows it}.
        """
        names = {prop: name for name, prop in attributes.PROPERTIES.items()}
        out = self.prop('vault/volume-' + vol.id, 'all', local=True)
        rows = (line.split('\t', 1) for line in out.splitlines())
        return {names[p]: v for p, v in rows if p in names}

    def prop(self, name, prop, local=False):
        """A property of a vault dataset.

        ``local``: the ``property<TAB>value`` rows of those set on the
        dataset itself (``zfs get -s local``).
        """
        if not local:
            return super(VolumeTypeAPITest, self).prop(name, prop)
        return self.vault_lab.run('zfs', 'get', '-Hp', '-s', 'local', '-o',
                                  'property,value', prop, name)

    def assert_logged(self, text):
        """``text`` is in Cinder's logs: the reason a refusal gave."""
        logs = self.vault_lab.cinder_logs(tail=5000)
        self.assertIn(text, ''.join(logs.values()))

    def test_type_sets_attributes_and_retype_changes_them(self):
        fast = self.make_type(sync_mode='nosync', frequency='2 h',
                              upload_rate='10 MiB/s')
        slow = self.make_type(frequency='1 d', download_rate='1M')
        bad = self.make_type(frequency='10')
        vol = self.create_volume(volume_type=fast.name)
        self.assertEqual({'sync_mode': 'nosync', 'frequency': '7200',
                          'upload_rate': str(10 * MiB)},
                         self.attributes(vol))

        # Retype in place: the new type's set, the old type's others gone.
        self.api.retype_volume(vol, slow.id, migration_policy='never')
        vol = self.wait(vol, 'available')
        self.assertEqual(slow.name, vol.volume_type)
        slow_attributes = {'frequency': '86400', 'download_rate': str(MiB)}
        self.assertEqual(slow_attributes, self.attributes(vol))

        # A bad value: the driver refuses before any change, the manager
        # puts the volume back as it was, with its type.
        self.api.retype_volume(vol, bad.id, migration_policy='never')
        vol = self.wait(vol, 'available')
        self.assertEqual(slow.name, vol.volume_type)
        self.assertEqual(slow_attributes, self.attributes(vol))

    def test_bad_spec_refuses_the_create(self):
        for specs, reason in (
                ({'frequency': '10'}, 'extra spec zfs_vault:frequency: '
                 'invalid frequency 10: must be between 60'),
                ({'colour': 'blue'}, 'unknown extra spec zfs_vault:colour')):
            bad = self.make_type(**specs)
            vol = self.api.create_volume(size=1, volume_type=bad.name)
            self.addCleanup(self.delete, vol)
            vol = self.api.wait_for_status(
                self.get(vol), 'error', failures=['available'], interval=2,
                wait=WAIT)
            self.assertNotIn('vault/volume-' + vol.id, labkit.zvols())
            self.assert_logged('volume type %s: %s' % (bad.name, reason))
