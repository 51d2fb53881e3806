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

"""Attach through Cinder's API as nova does, across the lab's hosts.

cinder-api, cinder-scheduler and cinder-volume run on the vault guest
(tools/lab_cinder.py), ``zfs-vault-agent`` runs on this compute guest as
its service would (labkit.start_agent), both on the vault's RabbitMQ.
The test is nova: it reserves an attachment, updates it with this host's
os-brick connector (``get_connector_properties`` with its host name),
uses the ``device_path`` of the ``local`` connection as libvirt would (a
VerifyingWriter is the VM), completes it, and deletes it to detach.
"""

import time

from openstack import exceptions as openstack_exceptions
from testtools import content as testtools_content

from cinder_zfs_vault import lease as leaselib
from tests.functional import test_api
from tools import lab_cinder
from tools import labkit

MiB = 1024 * 1024
#: Known content at the start of every volume, written on the vault.
BASE = 16 * MiB


def tearDownModule():
    """Cinder's services stop once this module's tests are done.

    The API tests run first in the lab (test_api sorts first); the
    services' periodic work would slow every later test.
    """
    labkit.vault_lab().stop_cinder()


class AttachAPITest(test_api.APITestCase):

    def setUp(self):
        super(AttachAPITest, self).setUp()
        self.engine = labkit.make_engine()  # to read states only
        self.addOnException(self._agent_log)
        self.agent = None
        self.start_agent()
        self.addCleanup(self.stop_agent)

    def _agent_log(self, exc_info):
        self.addDetail('zfs-vault-agent.log',
                       testtools_content.text_content(labkit.agent_log()))

    def start_agent(self):
        self.agent = labkit.start_agent(lab_cinder.transport_url())

    def stop_agent(self):
        if self.agent is not None:
            labkit.stop_agent(self.agent)
            self.agent = None

    def disk(self):
        vol = self.create_volume(size=1)
        self.vault_pattern(vol, 0, 'base', BASE)
        return vol

    def attach(self, vol):
        """nova's attach: reserve, update with the connector, complete.

        :returns: (attachment, connection_info).
        """
        # No instance: with noauth, cinder-api lets a user (not a service
        # with nova's service token) delete an in-use attachment of an
        # instance only after asking nova about it (bug #2004555), and the
        # lab has no nova. Attachments of no instance are glance_store's.
        att = self.api.create_attachment(vol.id)
        self.addCleanup(self.api.delete_attachment, att.id)
        connector = labkit.connector_properties(host=labkit.HOST)
        att = self.api.update_attachment(att.id, connector=connector)
        self.api.complete_attachment(att.id)
        self.wait(vol, 'in-use')
        # As nova reads it (_translate_attachment_ref in nova/volume/
        # cinder.py): the attachment's connection_info is the driver's
        # 'data' with its driver_volume_type beside it.
        data = dict(att.connection_info)
        data.pop('attachment_id', None)
        return att, {'driver_volume_type': data.pop('driver_volume_type'),
                     'data': data}

    def detach(self, vol, att):
        """nova's detach: delete the attachment. :returns: seconds."""
        start = time.monotonic()
        self.api.delete_attachment(att.id, ignore_missing=False)
        seconds = time.monotonic() - start
        self.wait(vol, 'available')
        return seconds

    def local_vm(self, info, vol):
        """The VM on a ``local`` connection's device, writing."""
        self.assertEqual('local', info['driver_volume_type'])
        device = info['data']['device_path']
        self.assertEqual('/dev/mapper/zvault-' + vol.id, device)
        # The VM boots at once from the vault's data.
        self.assertEqual(labkit.pattern('base', MiB),
                         labkit.read_at(device, 0, MiB))
        vm = labkit.VerifyingWriter(device, blocks=4096, seed=3)
        self.addCleanup(vm.stop)
        return vm.start()

    def assert_back_in_vault(self, vol, vm):
        """Every write of ``vm`` in the vault zvol; nothing left here."""
        self.assertGreater(vm.writes, 0)
        self.assertEqual([], self.vault_verify(vol, vm))
        self.assertEqual('-', self.prop('vault/volume-' + vol.id,
                                        leaselib.OWNER))
        self.assertEqual('in vault', self.engine.state(vol.id))
        self.assertEqual([], [d for d in labkit.dm_devices() if vol.id in d])

    def test_attach_as_nova_does_seeds_cuts_over_and_detach_returns_it(self):
        vol = self.disk()
        att, info = self.attach(vol)
        vm = self.local_vm(info, vol)
        # The agent seeds and cuts over behind the running VM.
        self.wait_for(lambda: self.engine.state(vol.id) == 'local', 600,
                      'cut-over to the local replica')
        time.sleep(5)  # the VM writes on the local replica
        vm.stop()  # nova stops the VM before it detaches
        seconds = self.detach(vol, att)
        self.addDetail('detach-seconds', testtools_content.text_content(
            'attachment delete through cinder-api: %.1f s' % seconds))
        self.assert_back_in_vault(vol, vm)

    def test_detach_while_the_agent_is_down_then_after_it_is_back(self):
        vol = self.disk()
        att, info = self.attach(vol)
        vm = self.local_vm(info, vol)
        time.sleep(2)
        vm.stop()
        self.stop_agent()
        # The detach fails clearly; nothing changed.
        self.assertRaises(openstack_exceptions.HttpException,
                          self.api.delete_attachment, att.id,
                          ignore_missing=False)
        self.assertIn('the zfs-vault-agent of %s did not answer ping'
                      % labkit.HOST, ''.join(
                          self.vault_lab.cinder_logs(tail=2000).values()))
        self.assertEqual('in-use', self.get(vol).status)
        self.assertEqual(labkit.HOST, self.prop('vault/volume-' + vol.id,
                                                leaselib.OWNER))
        self.assertTrue(labkit.os.path.exists(info['data']['device_path']))
        self.start_agent()
        self.detach(vol, att)
        self.assert_back_in_vault(vol, vm)

    def test_force_detach_of_a_host_gone_fences_it(self):
        vol = self.disk()
        att, info = self.attach(vol)
        vm = self.local_vm(info, vol)
        self.wait_for(lambda: self.engine.state(vol.id) == 'local', 600,
                      'cut-over to the local replica')
        time.sleep(2)
        vm.stop()
        # The host is gone (powered off, as the vault sees it: its agent
        # answers nothing); the operator force-detaches with no connector.
        self.agent.kill()
        self.agent.wait(60)
        self.agent = None
        self.addCleanup(self.engine.discard_fenced, vol.id)
        self.api.detach_volume(vol, att.id, force=True)
        self.wait(vol, 'available')
        self.assertEqual('-', self.prop('vault/volume-' + vol.id,
                                        leaselib.OWNER))
        self.assertIn('Force detach of volume-%s: the lease of %s is broken'
                      % (vol.id, labkit.HOST), ''.join(
                          self.vault_lab.cinder_logs(tail=2000).values()))
        # The vault holds the disk as of its last sync point (the seed's):
        # the VM's writes after it stayed on the host, where they are
        # still, and the host, back, is fenced: its late sync is refused.
        self.assertNotEqual([], self.vault_verify(vol, vm))
        self.assertEqual([], vm.verify(info['data']['device_path']))
        self.assertRaises(leaselib.Fenced, self.engine.sync, vol.id)
        self.assertNotEqual([], self.vault_verify(vol, vm))

    def iscsi_attach_detach(self, vol):
        att, info = self.attach(vol)
        self.assertEqual('iscsi', info['driver_volume_type'])
        brick = labkit.iscsi_connector()
        device = brick.connect_volume(info['data'])
        try:
            labkit.write_at(device['path'], 0, labkit.pattern('iscsi', MiB))
        finally:
            brick.disconnect_volume(info['data'], device, force=True)
        self.detach(vol, att)
        self.assertEqual(labkit.pattern('iscsi', MiB),
                         self.vault_read(vol, 0, MiB))

    def test_no_agent_and_nosync_volumes_attach_over_iscsi(self):
        vol = self.disk()
        self.vault_lab.run('zfs', 'set',
                           'org.openstack.zfsvault:sync-mode=nosync',
                           'vault/volume-' + vol.id)
        self.iscsi_attach_detach(vol)
        self.vault_lab.run('zfs', 'inherit',
                           'org.openstack.zfsvault:sync-mode',
                           'vault/volume-' + vol.id)
        self.stop_agent()
        self.iscsi_attach_detach(vol)
