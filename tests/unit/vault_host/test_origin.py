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

"""The origin exports survive a reboot of the vault host (origin.py)."""

import json
import os
from unittest import mock

import fixtures
import testtools

from cinder_zfs_vault.vault_host import origin

PREFIX = origin.IQN_PREFIX


def _target(name):
    return {'wwn': PREFIX + name, 'fabric': 'iscsi', 'tpgs': []}


def _store(name, dev):
    return {'name': 'zv-' + name, 'plugin': 'block', 'dev': dev}


class RestoreTest(testtools.TestCase):

    def setUp(self):
        super(RestoreTest, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.dev = os.path.join(self.dir, 'zd0')  # the zvol's device
        open(self.dev, 'w').close()
        self.save_file = os.path.join(self.dir, 'saveconfig.json')
        self.root = mock.Mock(targets=[], storage_objects=[])
        self.root.restore.return_value = []
        rts = mock.Mock()
        rts.RTSRoot.return_value = self.root
        self.useFixture(fixtures.MockPatch(
            'cinder_zfs_vault.vault_host.origin._rtslib', return_value=rts))
        self.exporter = origin.OriginExporter('192.0.2.1',
                                              save_file=self.save_file,
                                              device_timeout=1)

    def save(self, targets, stores):
        with open(self.save_file, 'w') as f:
            json.dump({'targets': targets, 'storage_objects': stores}, f)

    def test_restores_only_missing_origins_with_their_backstore(self):
        self.save([_target('volume-a'), _target('volume-b'),
                   {'wwn': 'iqn.2010-10.org.openstack:volume-c',
                    'fabric': 'iscsi'}],
                  [_store('volume-a', self.dev), _store('volume-b', self.dev),
                   {'name': 'iqn.2010-10.org.openstack:volume-c',
                    'plugin': 'block', 'dev': self.dev}])
        self.root.targets = [mock.Mock(wwn=PREFIX + 'volume-a')]
        self.assertEqual([PREFIX + 'volume-b'], self.exporter.restore())
        # Cinder's own target (volume-c) is its target helper's to restore.
        self.root.restore.assert_called_once_with(
            {'storage_objects': [_store('volume-b', self.dev)],
             'targets': [_target('volume-b')]})

    def test_nothing_saved_nothing_restored(self):
        self.assertEqual([], self.exporter.restore())
        self.root.restore.assert_not_called()

    def test_a_zvol_that_never_appears_does_not_stop_the_rest(self):
        self.save([_target('volume-a'), _target('volume-b')],
                  [_store('volume-a', self.dev + '-gone'),
                   _store('volume-b', self.dev)])
        self.assertEqual([PREFIX + 'volume-b'], self.exporter.restore())

    def test_each_change_is_saved(self):
        self.root.targets = [mock.Mock(wwn=PREFIX + 'volume-a')]
        self.exporter.unexport('volume-a')
        self.root.save_to_file.assert_called_once_with(self.save_file)
        self.root.targets = []
        self.exporter.unexport('volume-a')  # nothing there: nothing saved
        self.assertEqual(1, self.root.save_to_file.call_count)
