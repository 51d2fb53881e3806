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

"""Transfer slots: real lock files, held by this and by other processes."""

import fcntl
import os
import subprocess
import sys
import threading
import time

import fixtures
import testtools

from cinder_zfs_vault.vault_host import slots as slotlib


class SlotsTest(testtools.TestCase):

    def setUp(self):
        super(SlotsTest, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.limit = 2

    def slots(self, timeout=5):
        return slotlib.Slots(self.dir, lambda: self.limit, timeout=timeout,
                             poll=0.02)

    def test_at_most_limit_at_once_across_threads(self):
        running, most, lock = [0], [0], threading.Lock()

        def transfer(i):
            # Half of them syncs a caller waits on: the slot kept for them.
            with self.slots(timeout=30).slot('t%d' % i, urgent=i % 2):
                with lock:
                    running[0] += 1
                    most[0] = max(most[0], running[0])
                time.sleep(0.05)
                with lock:
                    running[0] -= 1

        threads = [threading.Thread(target=transfer, args=(i,))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(2, most[0])
        log = open(os.path.join(self.dir, 'slots.log')).read().split('\n')
        grants = [line for line in log if ' grant ' in line]
        self.assertEqual(8, len(grants))
        self.assertEqual(2, max(int(line.split()[2]) for line in grants))

    def test_one_host_cannot_take_every_slot(self):
        # Issue 21, 1: one host's streams (a trickling one, many disks)
        # held every slot; another host's waited for them all.
        self.limit = 4  # 3 for seeds and periodic syncs, 1 kept
        slots = self.slots(timeout=0.3)
        self.assertEqual(2, slots.host_limit())
        with slots.slot('a1', host='compute-1'), \
                slots.slot('a2', host='compute-1'):
            self.assertRaises(slotlib.NoSlot, self.enter, slots, 'a3',
                              'compute-1')
            self.assertEqual(2, slots.busy())
            self.enter(slots, 'b1', 'compute-2')  # the one left to others
        self.limit = 1
        self.assertEqual(1, slots.host_limit())
        capped = slotlib.Slots(self.dir, lambda: 4, timeout=0.3, poll=0.02,
                               per_host=lambda: 1)
        with capped.slot('a1', host='compute-1'):
            self.assertRaises(slotlib.NoSlot, self.enter, capped, 'a2',
                              'compute-1')
        self.assertEqual(0, capped.busy())

    def test_a_sync_a_caller_waits_on_takes_the_kept_slot(self):
        # Issue 21, 10: a detach's final sync waited behind seeds paced
        # for hours, and cinder-volume's RPC gave up after 600 s.
        self.limit = 2
        slots = self.slots(timeout=0.3)
        with slots.slot('seed a', host='compute-1'):
            # The one shared slot is the seed's: a periodic sync waits...
            self.assertRaises(slotlib.NoSlot, self.enter, slots, 'sync b',
                              'compute-2')
            # ... the detach's final sync does not.
            with slots.slot('final b', host='compute-2', urgent=True):
                self.assertEqual(2, slots.busy())  # sync_workers, no more
                # One urgent transfer per host: the kept slot is no way
                # round the cap for a host's periodic syncs.
                self.assertRaises(slotlib.NoSlot, self.enter_urgent, slots,
                                  'final c', 'compute-2')
                self.assertRaises(slotlib.NoSlot, self.enter_urgent, slots,
                                  'final d', 'compute-3')
        self.assertEqual(0, slots.busy())

    def test_the_line_lets_an_urgent_transfer_look_first(self):
        self.limit = 3
        slots = self.slots(timeout=0.3)
        waiter = slots._open('urgent')  # an urgent transfer looking
        fcntl.flock(waiter, fcntl.LOCK_EX)
        try:
            self.assertRaises(slotlib.NoSlot, self.enter, slots, 'sync a',
                              'compute-1')
        finally:
            os.close(waiter)
        self.enter(slots, 'sync a', 'compute-1')

    def test_no_slot_within_timeout(self):
        slots = self.slots(timeout=0.3)
        with slots.slot('a'), slots.slot('b', urgent=True):
            self.assertEqual(2, slots.busy())
            self.assertRaises(slotlib.NoSlot, self.enter, slots, 'c')
        self.assertEqual(0, slots.busy())

    def enter_urgent(self, slots, who, host):
        with slots.slot(who, host=host, urgent=True):
            pass

    def enter(self, slots, who, host=None):
        with slots.slot(who, host=host):
            pass

    def test_a_killed_holder_frees_its_slot(self):
        self.limit = 1
        code = ('import sys, time; sys.path.insert(0, %r)\n'
                'from cinder_zfs_vault.vault_host import slots\n'
                's = slots.Slots(%r, lambda: 1)\n'
                'with s.slot("child"):\n'
                '    print("held", flush=True); time.sleep(60)\n'
                % (os.getcwd(), self.dir))
        child = subprocess.Popen([sys.executable, '-c', code],
                                 stdout=subprocess.PIPE, text=True)
        self.addCleanup(child.kill)
        self.assertEqual('held', child.stdout.readline().strip())
        slots = self.slots(timeout=0.3)
        self.assertRaises(slotlib.NoSlot, self.enter, slots, 'waiting')
        child.kill()
        child.wait()
        self.enter(self.slots(timeout=5), 'after')  # the kernel freed it
