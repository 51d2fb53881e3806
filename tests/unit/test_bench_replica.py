"""The replica benchmark's own logic (its numbers come from the lab)."""

import os
import random
import tempfile

import fixtures
import testtools

from tools import bench_replica
from tools import labkit
from tools import vault_service

MiB = 1024 * 1024


class ArgsTest(testtools.TestCase):

    def test_defaults_are_the_issue_s(self):
        args = bench_replica.parse_args([])
        self.assertEqual(([1, 8], 20), (args.sizes, args.pauses))
        self.assertEqual(list(bench_replica.PARTS), args.parts)

    def test_quick_is_one_gib_and_three_pauses(self):
        args = bench_replica.parse_args(['--quick', '--sizes', '1,8'])
        self.assertEqual(([1], 3), (args.sizes, args.pauses))

    def test_sizes_and_parts_are_comma_lists(self):
        args = bench_replica.parse_args(['--sizes', '2,4',
                                         '--parts', 'pause,bytes'])
        self.assertEqual([2, 4], args.sizes)
        self.assertEqual(['pause', 'bytes'], args.parts)

    def test_bad_values_refused(self):
        for argv in (['--sizes', '0'], ['--sizes', 'x'], ['--parts', 'x'],
                     ['--pauses', '0'], ['--dirty-mib', '257'],
                     ['--increment-mib', '513'], ['--increment-mib', '0']):
            self.assertRaises(SystemExit, bench_replica.parse_args, argv)


class OffsetsTest(testtools.TestCase):

    def test_distinct_aligned_in_range(self):
        got = bench_replica.offsets(random.Random(1), 500, 4096, MiB,
                                    3 * MiB)
        self.assertEqual(500, len(set(got)))
        self.assertTrue(all(o % 4096 == 0 and MiB <= o <= 3 * MiB - 4096
                            for o in got))

    def test_more_than_fit_refused(self):
        self.assertRaises(ValueError, bench_replica.offsets,
                          random.Random(1), 3, MiB, 0, 2 * MiB)


class LocalVault(object):
    """The vault service's digests, of a file here."""

    digests = vault_service.VaultLab.digests


class WrittenTest(testtools.TestCase):

    def setUp(self):
        super(WrittenTest, self).setUp()
        self.useFixture(fixtures.MockPatchObject(labkit, 'vault_lab',
                                                 LocalVault))
        fd, self.path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, self.path)
        with open(self.path, 'wb') as f:
            f.truncate(MiB)

    def test_verify_finds_only_the_changed_write(self):
        written = bench_replica.Written()
        written.write(self.path, [0, 8192, 65536], 4096, passes=2)
        self.assertEqual([], written.verify_vault(self.path))
        with open(self.path, 'r+b') as f:
            # Flip the byte: writing a fixed one left the random data as
            # it was once in 256 runs (and the test failed).
            f.seek(8192 + 100)
            byte = f.read(1)[0]
            f.seek(8192 + 100)
            f.write(bytes([byte ^ 0xff]))
        self.assertEqual([8192], written.verify_vault(self.path))

    def test_the_last_pass_counts(self):
        written = bench_replica.Written()
        written.write(self.path, [4096], 4096)
        first = open(self.path, 'rb').read()
        written.write(self.path, [4096], 4096)
        with open(self.path, 'r+b') as f:
            f.write(first)
        self.assertEqual([4096], written.verify_vault(self.path))
