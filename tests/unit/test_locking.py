import subprocess
import sys
import tempfile
import threading
import time

import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import locking


class LockTest(testtools.TestCase):
    """Real lock files in a temporary directory."""

    def setUp(self):
        super(LockTest, self).setUp()
        self.path = tempfile.mkdtemp()

    def test_free_lock_is_taken_and_released(self):
        with locking.lock('a', 1, lock_path=self.path):
            pass
        with locking.lock('a', 1, lock_path=self.path):
            pass

    def test_thread_waits_then_times_out(self):
        held, done = threading.Event(), threading.Event()

        def holder():
            with locking.lock('b', 1, lock_path=self.path):
                held.set()
                done.wait(10)
        t = threading.Thread(target=holder)
        t.start()
        self.addCleanup(t.join)
        self.addCleanup(done.set)
        held.wait(10)
        start = time.monotonic()
        e = self.assertRaises(locking.LockTimeout, locking.lock('b', 0.3,
                              lock_path=self.path).__enter__)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertIsInstance(e, exception.Busy)
        self.assertIn('b is held', e.message)
        done.set()
        t.join()
        with locking.lock('b', 1, lock_path=self.path):
            pass

    def test_other_process_holds_the_lock(self):
        code = ('import sys, time\n'
                'from cinder_zfs_vault import locking\n'
                'with locking.lock("c", 5, lock_path=sys.argv[1]):\n'
                '    print("held", flush=True)\n'
                '    time.sleep(30)\n')
        child = subprocess.Popen([sys.executable, '-c', code, self.path],
                                 stdout=subprocess.PIPE, text=True)
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.assertEqual('held\n', child.stdout.readline())
        self.assertRaises(locking.LockTimeout,
                          locking.lock('c', 0.3, lock_path=self.path)
                          .__enter__)
        child.kill()
        child.wait()
        with locking.lock('c', 5, lock_path=self.path):
            pass

    def test_error_in_body_is_not_a_timeout(self):
        def body():
            with locking.lock('d', 1, lock_path=self.path):
                raise ValueError('inside')
        self.assertRaises(ValueError, body)
        with locking.lock('d', 0.1, lock_path=self.path):
            pass
