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

"""Origin exports: LIO's configuration saved at every change.

rtslib is replaced by a recording stand-in; the lab's power-cut test
(tests.functional.hosts.test_recovery.VaultPowerCutTest) shows the saved
configuration bringing the export back at boot.
"""

from unittest import mock

import fixtures
import testtools

from cinder_zfs_vault.vault_host import origin

IQN = 'iqn.2004-10.org.zfslab:compute-1'


class FakeRTS(object):
    """What origin.py uses of rtslib_fb, recording targets and saves."""

    def __init__(self, save_error=None):
        self.targets = []
        self.storage_objects = []
        self.saved = []
        self.save_error = save_error
        rts = self

        class Target(object):
            def __init__(self, fabric, wwn, mode):
                self.wwn = wwn
                rts.targets.append(self)

            def delete(self):
                rts.targets.remove(self)

        class Store(object):
            def __init__(self, name, dev, readonly):
                self.name = name
                rts.storage_objects.append(self)

            def delete(self):
                rts.storage_objects.remove(self)

        class Root(object):
            @property
            def targets(self):
                return list(rts.targets)

            @property
            def storage_objects(self):
                return list(rts.storage_objects)

            def save_to_file(self, path):
                if rts.save_error:
                    raise rts.save_error
                rts.saved.append(sorted(t.wwn for t in rts.targets))

        self.Target = Target
        self.BlockStorageObject = Store
        self.RTSRoot = Root
        self.FabricModule = self.TPG = self.NetworkPortal = mock.MagicMock()
        self.LUN = self.NodeACL = self.MappedLUN = mock.MagicMock()


class OriginExporterTest(testtools.TestCase):

    def exporter(self, rts):
        self.useFixture(fixtures.MockPatchObject(origin, '_rtslib',
                                                 lambda: rts))
        return origin.OriginExporter('192.0.2.10', save_file='/x.json')

    def test_export_and_unexport_are_saved_for_the_next_boot(self):
        rts = FakeRTS()
        exporter = self.exporter(rts)
        export = exporter.export('volume-1', '/dev/zvol/vault/volume-1', IQN,
                                 'user', 'password')
        self.assertEqual([[export.iqn]], rts.saved)
        exporter.unexport('volume-1')
        self.assertEqual([[export.iqn], []], rts.saved)

    def test_export_not_saved_is_removed(self):
        rts = FakeRTS(save_error=OSError('read-only file system'))
        exporter = self.exporter(rts)
        self.assertRaises(OSError, exporter.export, 'volume-1',
                          '/dev/zvol/vault/volume-1', IQN, 'user',
                          'password')
        self.assertEqual(([], []), (rts.targets, rts.storage_objects))
