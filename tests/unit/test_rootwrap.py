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

import io
import os
from unittest import mock

import fixtures
import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault.vault_host import rootwrap
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

    def test_datasets_outside_the_root_refused(self):
        # Issue 21, 14: the filters named subcommands, not datasets:
        # `zfs destroy -r rpool/ROOT/debian` passed.
        for argv in (
                ['zfs', 'destroy', '-r', 'rpool/ROOT/debian'],
                ['zfs', 'destroy', '-r', 'vault'],
                ['zfs', 'destroy', 'vault'],
                ['zfs', 'destroy', '-r', 'vault/a/b'],
                ['zfs', 'destroy', '-r', 'vaultx/volume-1'],
                ['zfs', 'set', 'volsize=1', 'rpool/swap'],
                ['zfs', 'rename', V, 'rpool/stolen'],
                ['zfs', 'rollback', 'rpool/ROOT/debian@old'],
                ['zfs', 'clone', V + '@s', 'rpool/x'],
                ['zfs', 'create', '-V', '1', 'rpool/x'],
                ['zfs', 'inherit', 'org.openstack.zfsvault:fenced',
                 'rpool'],
                ['zfs', 'hold', 'x', 'rpool/ROOT@s']):
            self.assertFalse(rootwrap_check.allowed(argv), argv)
        self.assertTrue(rootwrap_check.allowed(['zfs', 'destroy', '-r', V]))


class GeneratedFiltersTest(testtools.TestCase):

    def test_the_shipped_file_is_the_one_for_vault(self):
        with open(os.path.join(rootwrap_check.FILTERS,
                               'zfs-vault.filters')) as f:
            self.assertEqual(rootwrap.filters('vault'), f.read())

    def test_filters_of_another_root(self):
        out = io.StringIO()
        with mock.patch('sys.stdout', out):
            self.assertEqual(0, rootwrap.main(['--root', 'tank/cinder']))
        matcher = rootwrap_check.matcher(out.getvalue())
        self.assertTrue(matcher(['zfs', 'destroy', '-r',
                                 'tank/cinder/volume-1']))
        self.assertTrue(matcher(['zfs', 'set',
                                 'org.openstack.zfsvault:frequency=60',
                                 'tank/cinder']))
        self.assertFalse(matcher(['zfs', 'destroy', '-r', 'tank/volume-1']))
        self.assertFalse(matcher(['zfs', 'destroy', '-r', V]))
        self.assertRaises(exception.InvalidInput, rootwrap.filters,
                          'tank/-o')


class PrivsepFilterTest(testtools.TestCase):
    """The driver's privsep daemon starts through cinder-rootwrap."""

    def test_the_helper_command_of_our_context_passes(self):
        from oslo_privsep import priv_context

        from cinder_zfs_vault.vault_host import privileged
        self.assertEqual(rootwrap.CONTEXT, privileged.CONTEXT)
        # cinder-volume started as its unit does.
        conf = mock.MagicMock(config_file=['/etc/cinder/cinder.conf'],
                              config_dir=None)
        conf.__getitem__.return_value.helper_command = None
        self.useFixture(fixtures.MockPatchObject(priv_context.cfg, 'CONF',
                                                 conf))
        argv = privileged.vault_pctxt.helper_command('/tmp/tmpab12/privsep')
        # What cinder-rootwrap gets after its root helper (sudo ...).
        argv = argv[argv.index('privsep-helper'):]
        self.assertTrue(rootwrap_check.allowed(argv), argv)
        # oslo.rootwrap admits privsep-helper by itself too (its
        # load_filters adds a CommandFilter); ours names the context, as
        # Cinder's volume.filters names its own.
        ours, = [f for f in rootwrap_check.filters()
                 if f.name == 'privsep-rootwrap-zfs_vault']
        self.assertTrue(ours.match(argv))
        other = list(argv)
        other[other.index(privileged.CONTEXT)] += 'X'
        self.assertFalse(ours.match(other))
