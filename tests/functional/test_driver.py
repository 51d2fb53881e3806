"""The driver's public methods against real ZFS, LIO and open-iscsi."""

import os
import subprocess

from cinder import exception as cinder_exception
from cinder import objects
from os_brick import exception as brick_exception
from oslo_utils import units

from cinder_zfs_vault.vault_host import acls
from tests.functional import base
from tools import labkit

MiB = units.Mi


class AttachTest(base.FunctionalTestCase):

    def test_write_through_iscsi_reads_back(self):
        vol = self.volume(size=1)
        data = os.urandom(4 * MiB)
        with labkit.attached(self.driver, vol) as device:
            self.assertTrue(device.startswith('/dev/'))
            self.assertEqual(units.Gi, int(labkit.run(
                'blockdev', '--getsize64', device)))
            labkit.write_at(device, 100 * MiB, data)
            self.assertEqual(data, labkit.read_at(device, 100 * MiB,
                                                  len(data)))
            self.assertEqual(1, len(labkit.sessions()))
        # Logged out; the vault's zvol holds what went over iSCSI.
        self.assertEqual(data, labkit.read_at(self.zvol(vol), 100 * MiB,
                                              len(data)))

    def test_chap_is_required(self):
        vol = self.volume()
        wrong = {'auth_password': 'not-the-password'}
        with self.assertRaises(brick_exception.BrickException):
            with labkit.attached(self.driver, vol, wrong):
                pass
        # Nothing half-made: the context manager undid export and ACL.
        self.assertEqual([], labkit.targets())

    def test_terminate_without_connector_revokes_access(self):
        vol = self.volume()
        update = self.driver.create_export(self.ctx, vol, None)
        vol.update(update)
        self.addCleanup(self.driver.remove_export, self.ctx, vol)
        props = labkit.connector_properties()
        info = self.driver.initialize_connection(vol, props)
        self.driver.terminate_connection(vol, None)
        brick = labkit.iscsi_connector()
        self.assertRaises(brick_exception.BrickException,
                          brick.connect_volume, info['data'])
        self.assertEqual([], labkit.sessions())

    def test_terminate_without_connector_keeps_attached_hosts(self):
        # Issue 9, defect 4: the export was rebuilt with no ACL, which
        # revoked every other attachment's host.
        vol = self.volume(multiattach=True)
        vol.update(self.driver.create_export(self.ctx, vol, None))
        self.addCleanup(self.driver.remove_export, self.ctx, vol)
        props = labkit.connector_properties()
        gone = dict(props, initiator='iqn.1994-05.org.example:powered-off')
        self.driver.initialize_connection(vol, gone)
        info = self.driver.initialize_connection(vol, props)
        iqn = vol.provider_location.split()[1]
        self.assertEqual(sorted([gone['initiator'], props['initiator']]),
                         acls.initiators(iqn))
        vol.volume_attachment = objects.VolumeAttachmentList(objects=[
            objects.VolumeAttachment(connector=props),
            objects.VolumeAttachment(connector=None)])
        self.assertTrue(self.driver.terminate_connection(vol, None))
        self.assertEqual([props['initiator']], acls.initiators(iqn))
        brick = labkit.iscsi_connector()
        device = brick.connect_volume(info['data'])
        brick.disconnect_volume(info['data'], device, force=True)
        self.driver.terminate_connection(vol, props)

    def test_export_survives_restart(self):
        vol = self.volume()
        data = os.urandom(MiB)
        labkit.write_at(self.zvol(vol), 0, data)
        vol.update(self.driver.create_export(self.ctx, vol, None))
        iqn = vol.provider_location.split()[1]
        self.assertEqual([iqn], labkit.targets())
        # The vault reboots: LIO's running state is gone; a new driver
        # (cinder-volume restarting) runs ensure_export for each volume.
        labkit.clear_lio()
        self.assertEqual([], labkit.targets())
        restarted = labkit.make_driver()
        restarted.ensure_export(self.ctx, vol)
        self.assertEqual([iqn], labkit.targets())
        brick = labkit.iscsi_connector()
        props = labkit.connector_properties()
        info = restarted.initialize_connection(vol, props)
        device = brick.connect_volume(info['data'])
        try:
            self.assertEqual(data, labkit.read_at(device['path'], 0, MiB))
        finally:
            brick.disconnect_volume(info['data'], device, force=True)
            restarted.terminate_connection(vol, props)
            restarted.remove_export(self.ctx, vol)

    def test_extend_while_attached(self):
        vol = self.volume(size=1)
        with labkit.attached(self.driver, vol) as device:
            self.driver.extend_volume(vol, 2)
            vol.size = 2
            self.assertEqual(str(2 * units.Gi),
                             self.prop('vault/' + vol.name, 'volsize'))
            labkit.run('iscsiadm', '-m', 'session', '--rescan')
            labkit.run('udevadm', 'settle')
            self.assertEqual(2 * units.Gi, int(labkit.run(
                'blockdev', '--getsize64', device)))
            labkit.write_at(device, 2 * units.Gi - MiB, b'end' * 100)


class CloneTest(base.FunctionalTestCase):

    def family(self, from_snapshot_size):
        """An origin with data, a clone, a snapshot and a clone of that.

        The origin holds 1 MiB of random data at offset 0.
        """
        origin = self.volume(size=1)
        data = os.urandom(MiB)
        labkit.write_at(self.zvol(origin), 0, data)
        clone = self.volume(create=False)
        self.driver.create_cloned_volume(clone, origin)
        snap = labkit.new_snapshot(origin)
        self.driver.create_snapshot(snap)
        self.addCleanup(self.driver.delete_snapshot, snap)
        from_snap = self.volume(size=from_snapshot_size, create=False)
        self.driver.create_volume_from_snapshot(from_snap, snap)
        return origin, data, clone, snap, from_snap

    def test_clones_are_independent_and_o1(self):
        origin, first, clone, _snap, grown = self.family(2)
        # O(1): the clones share every block with the origin.
        self.assertLess(int(self.prop('vault/' + clone.name, 'written')),
                        MiB)
        self.assertEqual(str(2 * units.Gi),
                         self.prop('vault/' + grown.name, 'volsize'))
        # Writing the origin changes neither clone, and vice versa.
        labkit.write_at(self.zvol(origin), 0, os.urandom(MiB))
        self.assertEqual(first, labkit.read_at(self.zvol(clone), 0, MiB))
        self.assertEqual(first, labkit.read_at(self.zvol(grown), 0, MiB))
        labkit.write_at(self.zvol(clone), 0, b'c' * MiB)
        self.assertEqual(first, labkit.read_at(self.zvol(grown), 0, MiB))

    def test_delete_origin_with_dependents(self):
        origin, data, clone, snap, from_snap = self.family(1)
        # The snapshot has a clone: its deletion is deferred, not refused.
        self.driver.delete_snapshot(snap)
        self.assertEqual('on', self.prop('vault/%s@%s' % (origin.name,
                                                          snap.name),
                                         'defer_destroy'))
        self.driver.delete_volume(origin)
        self.assertNotIn('vault/' + origin.name, labkit.zvols())
        for vol in (clone, from_snap):
            self.assertEqual(data, labkit.read_at(self.zvol(vol), 0, MiB))
        self.driver.delete_volume(from_snap)
        self.driver.delete_volume(clone)
        # Every snapshot made for cloning went with its last clone.
        self.assertEqual(self.before['zvols'], labkit.zvols())
        # Deleting again: already gone is success.
        self.driver.delete_volume(origin)

    def test_delete_snapshot_already_gone(self):
        # Issue 9, defect 2: zfs's "could not find any snapshots to
        # destroy" left the snapshot in error_deleting.
        vol = self.volume()
        snap = labkit.new_snapshot(vol)
        self.driver.create_snapshot(snap)
        self.driver.delete_snapshot(snap)
        self.driver.delete_snapshot(snap)
        self.assertNotIn('vault/%s@%s' % (vol.name, snap.name),
                         labkit.zvols())

    def test_leased_volume_refused_where_it_would_be_stale(self):
        # Issue 9, defects 5 and 6: out on a compute host with a local
        # replica, the vault zvol is older than the disk.
        vol = self.volume()
        vault = labkit.vault()
        generation = vault.lease('compute-1', vol.id)['generation']
        self.addCleanup(vault.release, 'compute-1', vol.id, generation)
        before = labkit.zvols()
        snap = labkit.new_snapshot(vol)
        clone = labkit.new_volume()
        for call, args in (
                (self.driver.create_snapshot, (snap,)),
                (self.driver.create_cloned_volume, (clone, vol)),
                (self.driver.extend_volume, (vol, 2)),
                (self.driver.initialize_connection,
                 (vol, labkit.connector_properties()))):
            e = self.assertRaises(cinder_exception.InvalidVolume, call,
                                  *args)
            self.assertIn('attached to compute-1 through a local replica',
                          str(e))
        self.assertEqual(before, labkit.zvols())
        self.assertEqual(str(units.Gi), self.prop('vault/' + vol.name,
                                                  'volsize'))

    def test_revert_to_snapshot(self):
        vol = self.volume(size=1)
        before = os.urandom(MiB)
        labkit.write_at(self.zvol(vol), 0, before)
        snap = labkit.new_snapshot(vol)
        self.driver.create_snapshot(snap)
        self.addCleanup(self.driver.delete_snapshot, snap)
        labkit.write_at(self.zvol(vol), 0, os.urandom(MiB))
        self.driver.extend_volume(vol, 2)
        vol.size = 2
        self.driver.revert_to_snapshot(self.ctx, vol, snap)
        self.assertEqual(before, labkit.read_at(self.zvol(vol), 0, MiB))
        self.assertEqual(str(2 * units.Gi),
                         self.prop('vault/' + vol.name, 'volsize'))


class ManageTest(base.FunctionalTestCase):

    def test_manage_existing_image_and_unmanage(self):
        labkit.run('zfs', 'create', '-s', '-V', str(1536 * MiB),
                   'vault/legacy-image')
        self.addCleanup(labkit.run, 'zfs', 'destroy', 'vault/legacy-image',
                        check=False)
        data = os.urandom(MiB)
        labkit.write_at(labkit.wait_for('/dev/zvol/vault/legacy-image'), 0,
                        data)
        vol = self.volume(create=False)
        ref = {'source-name': 'legacy-image'}
        self.assertEqual(2, self.driver.manage_existing_get_size(vol, ref))
        listed = self.driver.get_manageable_volumes([], None, 100, 0,
                                                    ['size'], ['asc'])
        self.assertIn('legacy-image',
                      [e['reference']['source-name'] for e in listed])
        self.driver.manage_existing(vol, ref)
        self.assertEqual(data, labkit.read_at(self.zvol(vol), 0, MiB))
        self.driver.unmanage(vol)
        self.assertIn('vault/' + vol.name, labkit.zvols())

    def test_manage_refuses_bad_references(self):
        vol = self.volume(create=False)
        for ref in ({}, {'source-name': 'nope'},
                    {'source-name': '../compute/x'}):
            self.assertRaises(
                cinder_exception.ManageExistingInvalidReference,
                self.driver.manage_existing, vol, ref)


class FailureTest(base.FunctionalTestCase):

    def test_out_of_space_leaves_nothing(self):
        thick = labkit.make_driver('thick', zfs_vault_sparse=False)
        vol = labkit.new_volume(size=10000)
        self.assertRaisesRegex(cinder_exception.VolumeBackendAPIException,
                               'out of space', thick.create_volume, vol)
        # A thick clone grown past the pool fails and takes its clone and
        # clone snapshot with it.
        src = self.volume(size=1, drv=thick)
        clone = labkit.new_volume(size=10000)
        self.assertRaises(cinder_exception.VolumeBackendAPIException,
                          thick.create_cloned_volume, clone, src)
        self.assertEqual(['vault/' + src.name],
                         sorted(set(labkit.zvols())
                                - set(self.before['zvols'])))

    def test_bad_input_runs_nothing(self):
        vol = labkit.new_volume(size=1)
        vol.size = 0
        self.assertRaises(cinder_exception.InvalidInput,
                          self.driver.create_volume, vol)
        src = self.volume()
        clone = labkit.new_volume(size=1)
        clone.size = -3
        self.assertRaises(cinder_exception.InvalidInput,
                          self.driver.create_cloned_volume, clone, src)
        self.assertEqual(['vault/' + src.name],
                         sorted(set(labkit.zvols())
                                - set(self.before['zvols'])))

    def test_delete_while_exported_is_busy(self):
        vol = self.volume()
        vol.update(self.driver.create_export(self.ctx, vol, None))
        self.addCleanup(self.driver.remove_export, self.ctx, vol)
        self.assertRaises(cinder_exception.VolumeIsBusy,
                          self.driver.delete_volume, vol)
        self.assertIn('vault/' + vol.name, labkit.zvols())


class StatsAndImageTest(base.FunctionalTestCase):

    def test_stats(self):
        vols = [self.volume(size=s) for s in (1, 3)]
        pool, = self.driver.get_volume_stats(refresh=True)['pools']
        provisioned = sum(int(self.prop(r, 'volsize')) for r in
                          labkit.zvols() if '@' not in r) / units.Gi
        self.assertEqual(round(provisioned, 2),
                         pool['provisioned_capacity_gb'])
        self.assertGreaterEqual(pool['provisioned_capacity_gb'],
                                sum(v.size for v in vols))
        self.assertGreater(pool['total_capacity_gb'], 0)
        self.assertLessEqual(pool['free_capacity_gb'],
                             pool['total_capacity_gb'])

    def test_copy_image_to_volume_and_back(self):
        images = labkit.LocalImageService()
        raw = os.path.join(images.directory, 'src.raw')
        data = os.urandom(3 * MiB)
        with open(raw, 'wb') as f:
            f.write(data)
        qcow = raw + '.qcow2'
        subprocess.check_call(['qemu-img', 'convert', '-O', 'qcow2', raw,
                               qcow])
        image_id = images.add(qcow, disk_format='qcow2')
        vol = self.volume(size=1)
        self.driver.copy_image_to_volume(self.ctx, vol, images, image_id)
        self.assertEqual(data, labkit.read_at(self.zvol(vol), 0, len(data)))
        meta = images.create_placeholder('raw')
        self.driver.copy_volume_to_image(self.ctx, vol, images, meta)
        with open(images.path(meta['id']), 'rb') as f:
            self.assertEqual(data, f.read(len(data)))
        self.assertEqual(units.Gi, os.path.getsize(images.path(meta['id'])))
