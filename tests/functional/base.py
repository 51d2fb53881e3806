"""Base class of the functional tests: real ZFS, LIO and iSCSI in the lab.

The tests run only inside the lab (``tools/zfs-lab test``), which sets
ZFS_VAULT_FUNCTIONAL=1. There a missing pool or tool is a failure, not a skip.
Those in this package run in the single-guest lab (the driver beside its
pool); those in ``tests/functional/hosts`` run on compute-1 of a lab of
hosts, with the vault on its own guest (labkit.REMOTE_VAULT): their volumes
are made and their vault data read through the lab's vault service.
Every test checks at the end that it leaked no zvol, target, session or dm
device, on any host. A test that runs longer than OS_TEST_TIMEOUT seconds
(default 900) fails with every thread's stack printed, instead of stopping
the whole suite.
"""

import types

import faulthandler
import os
import sys
import time

import fixtures
import testtools

from tools import labkit

IN_LAB = os.environ.get('ZFS_VAULT_FUNCTIONAL') == '1'
TIMEOUT = int(os.environ.get('OS_TEST_TIMEOUT', 900))


@testtools.skipUnless(IN_LAB, 'runs in the lab: tools/zfs-lab test')
class FunctionalTestCase(testtools.TestCase):

    #: Seconds this class's tests may take (OS_TEST_TIMEOUT); a class of
    #: longer tests raises it.
    timeout = TIMEOUT

    def setUp(self):
        super(FunctionalTestCase, self).setUp()
        if self.timeout > 0:
            # The stacks first (where it hangs), then the test fails.
            faulthandler.dump_traceback_later(self.timeout - 5,
                                              file=sys.stderr)
            self.addCleanup(faulthandler.cancel_dump_traceback_later)
            self.useFixture(fixtures.Timeout(self.timeout, gentle=True))
        # Cinder's objects only where the driver runs in this process.
        self.ctx = labkit.setup(cinder=not labkit.REMOTE_VAULT)
        self.vault_lab = labkit.vault_lab()
        self.before = labkit.leftovers()
        self.driver = None if labkit.REMOTE_VAULT else labkit.make_driver()
        self.addCleanup(self._check_nothing_leaked)

    def wait_for(self, check, timeout, what, interval=1):
        """Poll ``check()`` until it is true, at most ``timeout`` s.

        :returns: what ``check()`` returned. Fails naming ``what``.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            self.assertLess(time.monotonic(), deadline,
                            'no %s in %d s' % (what, timeout))
            time.sleep(interval)

    def _check_nothing_leaked(self):
        self.assertEqual(self.before, labkit.leftovers(),
                         'the test left zvols, targets or sessions behind')

    def volume(self, size=1, create=True, drv=None,
               grant=labkit.COMPUTE_HOSTS, **kwargs):
        """A new volume, created on the vault unless create=False.

        It is deleted at cleanup if the test did not.
        :param grant: the hosts the vault may lease it to, as an operator
            grants them (``zfs-vault grant``) for the replica engine's own
            attach (Cinder's attach grants the connector's host).
        """
        if labkit.REMOTE_VAULT:
            # cinder-volume's driver runs on the vault guest.
            vid, name = self.vault_lab.create_volume(size)
            self.addCleanup(self.vault_lab.delete_volume, vid)
            vol = types.SimpleNamespace(id=vid, name=name, size=size)
        else:
            drv = drv or self.driver
            vol = labkit.new_volume(size, **kwargs)
            if create:
                drv.create_volume(vol)
            self.addCleanup(drv.delete_volume, vol)
        if create:
            vault = labkit.vault()
            for host in grant:
                vault.grant(vol.id, host)
        return vol

    def zvol(self, vol):
        """The vault zvol's device path (on the vault host)."""
        return self.vault_lab.zvol(vol.name)

    def vault_write(self, vol, offset, data):
        """Write the vault zvol of ``vol`` (as the vault host's root)."""
        self.vault_lab.write_at(self.zvol(vol), offset, data)

    def vault_pattern(self, vol, offset, seed, size):
        """labkit.pattern(seed, size) written on the vault zvol."""
        self.vault_lab.write_pattern(self.zvol(vol), offset, seed, size)

    def vault_random(self, vol, offset, size):
        self.vault_lab.write_random(self.zvol(vol), offset, size)

    def vault_read(self, vol, offset, size):
        return self.vault_lab.read_at(self.zvol(vol), offset, size)

    def vault_verify(self, vol, writer):
        """Blocks of the vault zvol unlike ``writer``'s last writes."""
        return self.vault_lab.verify(self.zvol(vol), writer.last)

    def prop(self, name, prop):
        """A property of a vault dataset."""
        return self.vault_lab.run('zfs', 'get', '-Hp', '-o', 'value', prop,
                                  name).strip()
