"""Base class of the functional tests: real ZFS, LIO and iSCSI in the lab.

The tests run only inside the lab guest (``tools/zfs-lab test``), which sets
ZFS_VAULT_FUNCTIONAL=1. There a missing pool or tool is a failure, not a skip.
Every test checks at the end that it leaked no zvol, target or session.
A test that runs longer than OS_TEST_TIMEOUT seconds (default 900) fails
with every thread's stack printed, instead of stopping the whole suite.
"""

import faulthandler
import os
import sys

import fixtures
import testtools

from tools import labkit

IN_LAB = os.environ.get('ZFS_VAULT_FUNCTIONAL') == '1'
TIMEOUT = int(os.environ.get('OS_TEST_TIMEOUT', 900))


@testtools.skipUnless(IN_LAB, 'runs in the lab: tools/zfs-lab test')
class FunctionalTestCase(testtools.TestCase):

    def setUp(self):
        super(FunctionalTestCase, self).setUp()
        if TIMEOUT > 0:
            # The stacks first (where it hangs), then the test fails.
            faulthandler.dump_traceback_later(TIMEOUT - 5, file=sys.stderr)
            self.addCleanup(faulthandler.cancel_dump_traceback_later)
            self.useFixture(fixtures.Timeout(TIMEOUT, gentle=True))
        self.ctx = labkit.setup()
        self.before = labkit.leftovers()
        self.driver = labkit.make_driver()
        self.addCleanup(self._check_nothing_leaked)

    def _check_nothing_leaked(self):
        self.assertEqual(self.before, labkit.leftovers(),
                         'the test left zvols, targets or sessions behind')

    def volume(self, size=1, create=True, drv=None, **kwargs):
        """A new volume, created on the vault unless create=False.

        It is deleted at cleanup if the test did not.
        """
        drv = drv or self.driver
        vol = labkit.new_volume(size, **kwargs)
        if create:
            drv.create_volume(vol)
        self.addCleanup(drv.delete_volume, vol)
        return vol

    def zvol(self, vol):
        return labkit.wait_for(self.driver.local_path(vol))

    def prop(self, name, prop):
        return labkit.run('zfs', 'get', '-Hp', '-o', 'value', prop,
                          name).strip()
