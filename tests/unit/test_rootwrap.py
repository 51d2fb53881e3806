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

"""The rootwrap filters name what the driver runs and nothing else.

Every zfs command of the driver's and the vault core's unit tests is
checked against the filters as it is recorded (test_driver.py,
test_vault.py); here, what must never pass.
"""

import testtools

from tests.unit import rootwrap_check

V = 'vault/volume-0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'


class RootwrapFiltersTest(testtools.TestCase):

    def test_what_the_driver_runs(self):
        for argv in (
                ['zfs', 'create', '-s', '-o', 'compression=lz4', '-V',
                 '1073741824', V],
                ['zfs', 'get', '-Hp', '-o', 'property,value', 'volsize', V],
                ['zfs', 'list', '-Hp', '-o', 'name,volsize,origin', '-t',
                 'volume,snapshot', '-r', '-s', 'createtxg', 'vault'],
                ['zfs', 'destroy', '-d', V + '@snapshot-1'],
                ['zfs', 'set', 'volsize=2147483648', V],
                ['zfs', 'inherit', 'org.openstack.zfsvault:lease-owner', V]):
            self.assertTrue(rootwrap_check.allowed(argv), argv)

    def test_ways_to_root_refused(self):
        for argv in (
                ['zfs', 'receive', V],
                ['zfs', 'recv', '-F', V],
                ['zfs', 'send', V + '@x'],
                ['zfs', 'allow', 'cinder', 'mount', 'vault'],
                ['zfs', 'set', 'mountpoint=/etc', 'vault/x'],
                ['zfs', 'set', 'setuid=on', 'vault/x'],
                ['zfs', 'create', '-o', 'mountpoint=/root', '-V', '1', V],
                ['zfs', 'mount', 'vault/x'],
                ['zfs', 'destroy', '-r', '-R', 'vault'],
                ['zfs', 'destroy', '-rR', 'vault'],
                ['zfs', 'destroy', '-r', '-f'],
                ['zfs', 'rename', V, '-p'],
                ['zfs', 'get', '-Hp', '-o', 'property,value', 'all', '-r'],
                ['zpool', 'destroy', 'vault'],
                ['zfs', 'set', 'org.openstack.zfsvault:x=a b', V],
                ['sh', '-c', 'zfs destroy vault']):
            self.assertFalse(rootwrap_check.allowed(argv), argv)
