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

"""The endpoint's request parsing and its error line, with hostile input."""

import contextlib
import io
import json
import os
import struct
import types

import fixtures
import testtools

from cinder_zfs_vault import exception
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault.vault_host import endpoint
from cinder_zfs_vault.vault_host import streams

VID = '0c3d8d55-2aa7-4dc0-9e6c-8e2f2b1e2b11'


class RecordingAuthority(object):
    """Records what reaches the authority: nothing, for a bad request."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name,) + args)
            return {'ok': name}
        return call


class EndpointTest(testtools.TestCase):

    def setUp(self):
        super(EndpointTest, self).setUp()
        self.authority = RecordingAuthority()
        self.endpoint = endpoint.Endpoint(self.authority, 'compute-1',
                                          'iqn.2004-10.org.zfslab:compute-1')

    def serve(self, command):
        out, err = io.StringIO(), io.StringIO()
        rc = endpoint.serve(self.endpoint, command, out, err)
        return rc, out.getvalue(), err.getvalue()

    def test_host_comes_from_the_key_not_the_request(self):
        rc, out, err = self.serve('lease %s' % VID)
        self.assertEqual((0, ''), (rc, err))
        self.assertEqual({'ok': 'lease'}, json.loads(out))
        self.assertEqual([('lease', 'compute-1', VID)], self.authority.calls)
        self.serve('export %s 7' % VID)
        self.assertEqual(('export', 'compute-1',
                          'iqn.2004-10.org.zfslab:compute-1', VID, 7),
                         self.authority.calls[-1])

    def test_hostile_requests_refused_before_the_authority(self):
        for command in ('', 'zfs destroy -r vault', 'lease', 'lease a b',
                        'release %s -1' % VID, 'release %s 1e3' % VID,
                        'release %s 99999999999999999999' % VID,
                        'send %s 1' % VID, 'lease "%s' % VID,
                        'break %s' % VID, 'allow %s compute-1' % VID,
                        'lease %s; reboot' % VID, 'info %s\n' % VID + 'x',
                        # Digits to isdigit(): int() read the Arabic-Indic
                        # one and raised ValueError on the superscript.
                        'release %s \u0661' % VID, 'release %s \u00b2' % VID,
                        'release %s +1' % VID, 'release %s " 1"' % VID):
            rc, out, err = self.serve(command)
            self.assertEqual(1, rc, command)
            self.assertEqual('', out)
            self.assertTrue(err.startswith(protocol.PROGRAM
                                           + ': InvalidInput: '), err)
            self.assertEqual(1, len(err.splitlines()), err)
        self.assertEqual([], self.authority.calls)

    def test_whoami_is_the_keys_names(self):
        rc, out, err = self.serve('whoami')
        self.assertEqual({'host': 'compute-1',
                          'initiator': 'iqn.2004-10.org.zfslab:compute-1'},
                         json.loads(out))
        self.assertEqual([], self.authority.calls)

    def test_not_granted_crosses_as_its_class(self):
        def refuse(*args):
            raise leaselib.NotGranted('vault/volume-x is not attached to '
                                      'compute-1')
        self.authority.lease = refuse
        rc, out, err = self.serve('lease %s' % VID)
        self.assertIsInstance(protocol.error_from(err, 'lease'),
                              leaselib.NotGranted)

    def test_refusal_crosses_as_its_class(self):
        def refuse(*args):
            raise leaselib.Fenced('vault/volume-x: refused')
        self.authority.lease = refuse
        rc, out, err = self.serve('lease %s' % VID)
        self.assertEqual(1, rc)
        error = protocol.error_from(err, 'lease')
        self.assertIsInstance(error, leaselib.Fenced)
        self.assertEqual('vault/volume-x: refused', str(error))


class StalledReceiverTest(testtools.TestCase):

    def test_send_to_a_host_that_stops_reading_frees_its_slot(self):
        """A powered-off host never closes its end: the stall ends it."""
        # Without the stall bound the send blocks for ever: fail instead.
        self.useFixture(fixtures.Timeout(30, gentle=True))
        slots = []

        class Authority(object):
            @contextlib.contextmanager
            def slot_(self, who, host=None, urgent=False):
                slots.append('held')
                try:
                    yield
                finally:
                    slots.append('freed')

            def send_argv(self, *args, **kwargs):
                return ['sh', '-c', 'exec cat /dev/zero']

        authority = Authority()
        authority.slots = types.SimpleNamespace(slot=authority.slot_)
        read_end, write_end = os.pipe()  # nobody reads read_end
        self.addCleanup(os.close, read_end)
        endpoint_ = endpoint.Endpoint(
            authority, 'compute-1', 'iqn.2004-10.org.zfslab:compute-1',
            stall_timeout=0.5, stdin=io.BytesIO(),
            stdout=os.fdopen(write_end, 'wb'), stderr=io.StringIO())
        error = self.assertRaises(exception.CommandFailed, endpoint_.handle,
                                  'send %s 3 zv-1-0123abcd' % VID)
        self.assertIn('receiver stalled', str(error))
        self.assertEqual(['held', 'freed'], slots)


class SlotGrantTest(testtools.TestCase):

    def test_stream_says_when_it_holds_a_slot(self):
        """The grant comes inside the slot, before a byte of the stream."""
        events = []

        class Authority(object):
            @contextlib.contextmanager
            def slot_(self, who, host=None, urgent=False):
                events.append('held')
                yield
                events.append('freed')

            def send_argv(self, *args, **kwargs):
                return ['printf', 'stream']

        class Err(object):
            def write(self, text):
                events.append(text)

            def flush(self):
                pass

        authority = Authority()
        authority.slots = types.SimpleNamespace(slot=authority.slot_)
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, 'rb') as stream:
            endpoint.Endpoint(authority, 'compute-1',
                              'iqn.2004-10.org.zfslab:compute-1',
                              stdin=io.BytesIO(),
                              stdout=os.fdopen(write_end, 'wb'),
                              stderr=Err()).handle(
                'send %s 3 zv-1-0123abcd' % VID)
            self.assertEqual(b'stream', stream.read())
        self.assertEqual(['held', protocol.SLOT_GRANTED + '\n', 'freed'],
                         events)


class ProtocolTest(testtools.TestCase):

    def test_known_and_unknown_errors(self):
        for error in (leaselib.LeaseHeld('x'), protocol.NotYours('y'),
                      exception.OutOfSpace('z'), exception.Diverged('d')):
            back = protocol.error_from(protocol.error_line(error), 'req')
            self.assertIs(type(error), type(back))
        self.assertIsInstance(
            protocol.error_from(protocol.error_line(KeyError('k')), 'req'),
            protocol.EndpointError)
        self.assertIsInstance(
            protocol.error_from('ssh: connect to host vault port 22: '
                                'Connection refused', 'req'),
            protocol.EndpointError)


def begin(header=streams.COMPOUNDSTREAM, payload=0, order='<',
          magic=streams.DMU_BACKUP_MAGIC, drr_type=streams.DRR_BEGIN):
    """A stream's first record, as libzfs writes it (zfs_ioctl.h)."""
    record = struct.pack(order + 'IIQQ', drr_type, payload, magic,
                         header | (0x4 << 2))  # some feature flags
    return record + b'\0' * (streams.BEGIN_SIZE - len(record))


class ReceiveTest(testtools.TestCase):
    """Issue 21, 1: a host's stream cannot set the vault's properties."""

    def receive(self, stream):
        """Serve ``receive`` with ``stream`` on standard input.

        :returns: (exit status, stderr, what zfs receive was fed or None).
        """
        fed = []

        class Authority(RecordingAuthority):
            @contextlib.contextmanager
            def slot_(self, who, host=None, urgent=False):
                yield

            def receive(self, host, volume_id, generation, start, feed,
                        expect_guid=None):
                read_end, write_end = os.pipe()
                child = types.SimpleNamespace(stdin=os.fdopen(write_end,
                                                              'wb'))
                feed(child)
                with os.fdopen(read_end, 'rb') as received:
                    fed.append(received.read())
                return {'snap': 'zv-2-0123abcd', 'guid': '42'}

        authority = Authority()
        authority.slots = types.SimpleNamespace(slot=authority.slot_)
        read_end, write_end = os.pipe()
        with os.fdopen(write_end, 'wb') as host:
            host.write(stream)
        err = io.StringIO()
        with os.fdopen(read_end, 'rb') as stdin:
            rc = endpoint.serve(endpoint.Endpoint(
                authority, 'compute-1', 'iqn.2004-10.org.zfslab:compute-1',
                stall_timeout=5, stdin=stdin, stdout=io.BytesIO(),
                stderr=io.StringIO()), 'receive %s 3 -' % VID,
                io.StringIO(), err)
        return rc, err.getvalue(), fed[0] if fed else None

    def test_plain_streams_are_fed_whole(self):
        for header in (streams.SUBSTREAM, streams.COMPOUNDSTREAM):
            for order in '<>':
                stream = begin(header, order=order) + b'records' * 1000
                self.assertEqual((0, '', stream), self.receive(stream))

    def test_a_resumed_substream_is_fed_whole(self):
        # send -t: the kernel's nvlist (resume_object, resume_offset) is
        # the first record's payload; the first version of the check
        # refused every resumed sync (lab, FullPoolTest).
        stream = begin(streams.SUBSTREAM, payload=96) + b'\0' * 96 + b'r'
        self.assertEqual((0, '', stream), self.receive(stream))

    def test_a_stream_carrying_an_nvlist_never_reaches_zfs_receive(self):
        rc, err, fed = self.receive(begin(payload=1024) + b'\0' * 1024)
        self.assertEqual((1, None), (rc, fed))
        self.assertIn('InvalidInput: a stream carrying properties', err)

    def test_what_is_no_send_stream_never_reaches_zfs_receive(self):
        for stream in (b'', b'short', begin(magic=0x1234),
                       begin(drr_type=5), begin(header=3)):
            rc, err, fed = self.receive(stream)
            self.assertEqual((1, None), (rc, fed), stream[:16])
            self.assertIn('InvalidInput: not a ZFS send stream', err)
