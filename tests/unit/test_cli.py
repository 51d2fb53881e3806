"""The ``zfs-vault`` CLI over a recorded engine and a fake orchestrator.

The engine is the real ReplicaEngine (compute_host/replica.py) with a
:class:`~tests.unit.fake_executor.RecordingExecutor` behind its ``zfs`` and
``dmsetup``, so the tests see the commands each CLI command runs (and that
a refusal runs none that change anything).
"""

import io
import json
import os
import tempfile
import time
import types

import fixtures
from oslo_concurrency.fixture import lockutils as lock_fixture
from oslo_config import cfg
import testtools

from cinder_zfs_vault import attributes
from cinder_zfs_vault.cmd.cli import app as cli
from cinder_zfs_vault.cmd.cli import format as cli_format
from cinder_zfs_vault.compute_host import agent
from cinder_zfs_vault.compute_host import dm
from cinder_zfs_vault.compute_host.phases import sync as sync_phase
from cinder_zfs_vault.compute_host import replica
from cinder_zfs_vault import exception
from cinder_zfs_vault import executor as executors
from cinder_zfs_vault import lease as leaselib
from cinder_zfs_vault import protocol
from cinder_zfs_vault.vault_host import authority
from cinder_zfs_vault import zfs
from tests import cli_commands
from tests.unit import fake_executor

A = '11111111-1111-4111-8111-111111111111'
B = '22222222-2222-4222-8222-222222222222'
C = '33333333-3333-4333-8333-333333333333'
HOST = 'compute-1'
GiB = 1024 ** 3
LIST_VAULT = ('zfs', 'list', '-Hp', '-o', ','.join(authority._LIST_PROPS),
              '-t', 'volume,snapshot')
NOT_FOUND = fake_executor.failure("cannot open 'x': dataset does not exist")
NO_DEVICE = fake_executor.failure('Device does not exist.')


def zrow(name, volsize='-', creation='1700000000', owner='-', gen='-',
         guid='-', at='-', fenced='-'):
    return '\t'.join((name, str(volsize), str(creation), owner, str(gen),
                      guid, str(at), fenced))


class Terminal(io.StringIO):

    def isatty(self):
        return True


class FakeOrchestrator(object):
    """The orchestrator's API (flows.Orchestrator), recording calls."""

    def __init__(self):
        self.calls = []
        self.flows = []

    def in_flight(self):
        return list(self.flows)

    def attach(self, volume_id):
        self.calls.append(('attach', volume_id))
        return '/dev/mapper/zvault-' + volume_id

    def seed(self, volume_id, progress=None):
        self.calls.append(('seed', volume_id))
        if progress:
            progress(512 * 1024, 1024 * 1024)
            progress(1024 * 1024, 1024 * 1024)
        return [0.01234, 0.0021]

    def sync(self, volume_id, progress=None):
        self.calls.append(('sync', volume_id))
        return sync_phase.SyncResult('compute/volume-%s@zv-4-0123abcd'
                                     % volume_id, '987', 4096, 0.25)

    def detach(self, volume_id, progress=None):
        self.calls.append(('detach', volume_id))
        return None


class CLITestCase(testtools.TestCase):

    def setUp(self):
        super(CLITestCase, self).setUp()
        self.useFixture(lock_fixture.ExternalLockFixture())
        self.execute = fake_executor.RecordingExecutor()
        z = zfs.ZFS(self.execute)
        self.engine = replica.ReplicaEngine(
            None, z, dm.DeviceMapper(self.execute), None, HOST,
            '192.0.2.10:3260', 'vault', 'compute')
        # The operator's view of the vault, on the vault host.
        self.unexported = []
        exporter = types.SimpleNamespace(unexport=self.unexported.append,
                                         exported=lambda name: False)
        self.vault_view = authority.Authority(
            z, exporter, 'vault', self.useFixture(fixtures.TempDir()).path)
        self.orchestrator = FakeOrchestrator()
        self.problems = {}
        self.conf_file = self.write_conf('')
        # Nothing of this host by default: no dm devices, no replicas.
        self.execute.on('dmsetup', 'info', out=NO_DEVICE)
        self.execute.on('dmsetup', 'table', out='No devices found\n')
        self.execute.on('dmsetup', 'info', '-c', out='No devices found\n')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value', 'type',
                        out=NOT_FOUND)
        self.execute.on('zfs', 'list', '-Hp', '-o', 'name', '-t', 'volume',
                        '-d', '1', 'compute', out='')

    def write_conf(self, text):
        fd, path = tempfile.mkstemp(suffix='.conf')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def mapped_over(self, volume_id, *below):
        """The VM's device of ``volume_id`` exists, mapping ``below``."""
        name = 'zvault-' + volume_id
        self.execute.on('dmsetup', 'info', name, out='')
        self.execute.on('dmsetup', 'deps', '-o', 'devname', name,
                        out=' %d dependencies  : %s\n' % (
                            len(below), ' '.join('(%s)' % b for b in below)))

    def vault(self, *rows):
        self.execute.on(*LIST_VAULT, out=''.join(r + '\n' for r in rows))

    def run_cli(self, *argv, stdout=None):
        test = self
        backend = types.SimpleNamespace(engine=self.engine,
                                        orchestrator=self.orchestrator,
                                        vault=self.vault_view,
                                        problems=lambda: self.problems)

        class App(cli.ZFSVaultApp):
            def make_backend(self):
                test.conf = self.conf
                return backend

        self.stdout = stdout or io.StringIO()
        self.stderr = io.StringIO()
        zfs_vault = App(conf=cfg.ConfigOpts(),
                        command_manager=cli_commands.command_manager(),
                        stdout=self.stdout, stderr=self.stderr)
        return zfs_vault.run(['--config-file', self.conf_file] + list(argv))

    def json_out(self, *argv):
        rc = self.run_cli(*(argv + ('-f', 'json')))
        self.assertEqual(0, rc, self.stderr.getvalue())
        return json.loads(self.stdout.getvalue())

    def assertRefused(self, message, *argv):
        """Exit 1, ``message`` on one stderr line, no change made."""
        rc = self.run_cli(*argv)
        self.assertEqual(1, rc)
        err = self.stderr.getvalue().strip()
        self.assertIn(message, err)
        self.assertEqual(1, len(err.splitlines()), err)
        self.assertEqual('', self.stdout.getvalue())
        for verb in ('set', 'inherit', 'snapshot', 'destroy', 'create'):
            self.assertEqual([], self.execute.commands('zfs', verb))
        for verb in ('create', 'remove', 'reload'):
            self.assertEqual([], self.execute.commands('dmsetup', verb))
        self.assertEqual([], self.orchestrator.calls)


class ListTest(CLITestCase):

    def test_list_json_states_from_one_vault_listing(self):
        now = int(time.time())
        self.vault(
            zrow('vault', creation=now),
            zrow('vault/volume-' + A, GiB),
            zrow('vault/volume-%s@zv-1-aaaaaaaa' % A, creation=now - 900),
            zrow('vault/volume-' + B, 2 * GiB, owner=HOST, gen=3,
                 guid='555'),
            zrow('vault/volume-%s@zv-1-bbbbbbbb' % B, creation=now - 600),
            zrow('vault/volume-%s@snapshot-x' % B, creation=now - 10),
            zrow('vault/volume-%s@zv-2-cccccccc' % B, creation=now - 120),
            zrow('vault/volume-' + C, GiB, owner='compute-2', gen=7),
            zrow('vault/other', GiB))
        # B is on this host, cut over to its local replica.
        self.execute.on('dmsetup', 'table', out='zvault-%s: 0 4194304 '
                        'linear 230:16 0\nvg-root: 0 8 linear 8:1 0\n' % B)
        self.execute.on('dmsetup', 'info', '-c',
                        out='zvault-%s\t1\nvg-root\t1\n' % B)
        self.execute.on('zfs', 'list', '-Hp', '-o', 'name', '-t', 'volume',
                        '-d', '1', 'compute', out='compute/volume-%s\n' % B)
        self.execute.on('dmsetup', 'info', 'zvault-' + B, out='')
        self.execute.on('dmsetup', 'table', 'zvault-' + B,
                        out='0 4194304 linear 230:16 0\n')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'written', 'compute/volume-' + B,
                        out='written\t4096\n')
        rows = {r['Volume']: r for r in self.json_out('list')}
        self.assertEqual([A, B, C], sorted(rows))
        a, b, c = rows[A], rows[B], rows[C]
        self.assertEqual(('in vault', None, 0, None, None),
                         (a['State'], a['Lease owner'], a['Generation'],
                          a['Lag (s)'], a['Unsynced bytes']))
        self.assertEqual(cli_format.timestamp(now - 900), a['Last sync'])
        self.assertEqual(('local', HOST, 3, '555', 4096),
                         (b['State'], b['Lease owner'], b['Generation'],
                          b['Synced GUID'], b['Unsynced bytes']))
        # The newest sync point, not a Cinder snapshot, is the last sync.
        self.assertEqual(cli_format.timestamp(now - 120), b['Last sync'])
        self.assertTrue(120 <= b['Lag (s)'] < 130, b['Lag (s)'])
        self.assertEqual(('remote', 'compute-2', 7, None),
                         (c['State'], c['Lease owner'], c['Generation'],
                          c['Last sync']))
        # One listing of the vault; per-disk commands only for B.
        self.assertEqual(1, len(self.execute.commands(*LIST_VAULT)))
        for vid in (A, C):
            self.assertFalse([c for c in self.execute.calls
                              if any(vid in arg for arg in c)
                              and c[:2] != ('zfs', 'list')])

    def test_flows_in_flight_name_the_state(self):
        self.vault(zrow('vault'), zrow('vault/volume-' + B, GiB, owner=HOST,
                                       gen=3))
        self.execute.on('zfs', 'list', '-Hp', '-o', 'name', '-t', 'volume',
                        '-d', '1', 'compute', out='compute/volume-%s\n' % B)
        self.mapped_over(B, 'zd16')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'written', 'compute/volume-' + B,
                        out='written\t8192\n')
        for flows, state in (([], 'local'),
                             ([('sync', B, 'RUNNING')], 'syncing'),
                             ([('detach', B, 'RUNNING')], 'releasing'),
                             ([('sync', A, 'RUNNING')], 'local')):
            self.orchestrator.flows = flows
            row, = self.json_out('list')
            self.assertEqual((state, 8192),
                             (row['State'], row['Unsynced bytes']), flows)

    def test_what_the_agent_failed_to_do_is_listed(self):
        # Issue 8: a broken state is reported in zfs-vault list, from what
        # the running agent keeps (service.read_problems).
        self.vault(zrow('vault'), zrow('vault/volume-' + B, GiB, owner=HOST,
                                       gen=3))
        self.mapped_over(B, 'zvault-%s-snap' % B)
        self.execute.on('dmsetup', 'table',
                        out='zvault-%s: 0 2097152 linear 253:1 0\n' % B)
        self.problems = {B: {'failures': 2, 'retry_at': 1800000000,
                             'error': 'vault unreachable\x1b[2J'}}
        row, = self.json_out('list')
        self.assertEqual(('seeding', "2 failures, next try "
                          "2027-01-15T08:00:00Z: 'vault unreachable\\x1b[2J'"),
                         (row['State'], row['Problem']))

    def test_cut_network_lists_what_this_host_knows(self):
        # Issue 8, network cut: the lag and unsynced bytes of a replica go
        # on growing where the vault cannot be asked; list shows them.
        def unreachable():
            raise protocol.EndpointError(
                'vault endpoint: disks failed: ssh: connect to host vault '
                'port 22: No route to host')
        self.vault_view = types.SimpleNamespace(disks=unreachable)
        self.execute.on('zfs', 'list', '-Hp', '-o', 'name', '-t', 'volume',
                        '-d', '1', 'compute', out='compute/volume-%s\n' % B)
        self.mapped_over(B, 'zd16')
        local = 'compute/volume-' + B
        # zv-2 landed (held as the next base); zv-3 was taken by a sync
        # the cut stopped.
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        'name,createtxg,clones,userrefs,guid',
                        out='%s@zv-2-0123abcd\t10\t\t1\t222\n'
                            '%s@zv-3-0123abcd\t11\t\t0\t333\n'
                            % (local, local))
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'written@zv-2-0123abcd', local,
                        out='written@zv-2-0123abcd\t5242880\n')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        'creation', local + '@zv-2-0123abcd',
                        out='creation\t%d\n' % (time.time() - 600))
        row, = self.json_out('list')
        self.assertEqual((B, 'local', '222', 5242880),
                         (row['Volume'], row['State'], row['Synced GUID'],
                          row['Unsynced bytes']))
        self.assertTrue(600 <= row['Lag (s)'] < 660, row['Lag (s)'])
        self.assertIn('No route to host', row['Problem'])
        self.assertIn('vault unreachable', self.stderr.getvalue())

    def test_list_table_output(self):
        self.vault(zrow('vault'), zrow('vault/volume-' + A, GiB))
        self.assertEqual(0, self.run_cli('list'))
        out = self.stdout.getvalue()
        self.assertIn('Lease owner', out)
        self.assertIn(A, out)
        self.assertIn('in vault', out)

    def test_missing_vault_dataset(self):
        self.execute.on(*LIST_VAULT, out=NOT_FOUND)
        self.assertRefused('dataset does not exist', 'list')


class ShowTest(CLITestCase):

    def test_show_json(self):
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        ','.join(authority._LIST_PROPS),
                        out=zrow('vault/volume-' + A, GiB, owner=HOST, gen=2)
                        + '\n')
        out = self.json_out('show', A)
        self.assertEqual({'Volume': A, 'Dataset': 'vault/volume-' + A,
                          'Size': GiB, 'State': 'in vault',
                          'Lease owner': HOST, 'Generation': 2,
                          'Last sync': None, 'Synced GUID': None,
                          'Lag (s)': None, 'Unsynced bytes': None,
                          'Problem': None, 'Frequency (s)': 300,
                          'Next sync': None,
                          'Upload rate (B/s)': 0, 'Download rate (B/s)': 0,
                          'Sync mode': 'sync', 'Set here': []}, out)
        listing, = self.execute.commands('zfs', 'list', '-Hp', '-o',
                                         ','.join(authority._LIST_PROPS))
        self.assertEqual(('-d', '1', '-s', 'createtxg', 'vault/volume-' + A),
                         listing[-5:])

    def test_bad_id_refused_before_any_command(self):
        self.assertRefused("invalid id 'not-a-uuid'", 'show', 'not-a-uuid')
        self.assertEqual([], self.execute.calls)

    def test_missing_volume(self):
        self.execute.on('zfs', 'list', out=NOT_FOUND)
        self.assertRefused('volume %s is not in the vault (vault)' % A,
                           'show', A)


class LockTest(CLITestCase):

    def disk(self, snapshots=(), **lease):
        """Volume A with ``lease`` and sync points (name, creation)."""
        rows = [zrow('vault/volume-' + A, GiB, **lease)]
        rows += [zrow('vault/volume-%s@%s' % (A, snap), creation=created)
                 for snap, created in snapshots]
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        ','.join(authority._LIST_PROPS),
                        out=''.join(r + '\n' for r in rows))
        props = [(leaselib.OWNER, lease.get('owner', '-')),
                 (leaselib.GENERATION, lease.get('gen', '-')),
                 (leaselib.SYNCED_GUID, '-'), (leaselib.SYNCED_AT, '-')]
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        ','.join(leaselib.PROPS),
                        out=''.join('%s\t%s\n' % p for p in props))

    def run_ok(self, *argv):
        self.assertEqual(0, self.run_cli(*argv), self.stderr.getvalue())
        return self.stdout.getvalue()

    def test_lock_for_a_host(self):
        self.disk(gen=4)
        self.assertEqual('volume %s leased to compute-9, generation 5\n' % A,
                         self.run_ok('lock', A, '--host', 'compute-9'))
        self.assertEqual([('zfs', 'set', leaselib.GENERATION + '=5',
                           leaselib.OWNER + '=compute-9',
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'set'))

    def test_lock_defaults_to_this_host(self):
        self.disk()
        self.assertIn('leased to %s, generation 1' % HOST,
                      self.run_ok('lock', A))

    def test_lock_again_keeps_the_generation(self):
        self.disk(owner='compute-9', gen=4)
        self.assertIn('leased to compute-9, generation 4',
                      self.run_ok('lock', A, '--host', 'compute-9'))
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_lock_held_elsewhere_refused(self):
        self.disk(owner='compute-2', gen=4)
        self.assertRefused('leased to compute-2 (generation 4)',
                           'lock', A, '--host', 'compute-9')

    def test_bad_host_refused_before_any_command(self):
        self.assertRefused("invalid host name 'a b'", 'lock', A, '--host',
                           'a b')
        self.assertEqual([], self.execute.calls)

    def test_unlock_ours(self):
        self.disk(owner=HOST, gen=4)
        self.assertEqual('volume %s released by %s (generation 4)\n'
                         % (A, HOST), self.run_ok('unlock', A))
        self.assertEqual([('zfs', 'inherit', leaselib.OWNER,
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'inherit'))
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_unlock_of_another_hosts_lease_refused(self):
        self.disk(owner='compute-2', gen=4)
        self.assertRefused('unlock -f', 'unlock', A)

    def test_unlock_with_a_replica_here_refused(self):
        self.disk(owner=HOST, gen=4)
        self.execute.on('dmsetup', 'info', 'zvault-' + A, out='')
        self.execute.on('dmsetup', 'deps', '-o', 'devname', 'zvault-' + A,
                        out=' 1 dependencies  : (zvault-%s-snap)\n' % A)
        self.assertRefused('has a replica on this host (seeding)',
                           'unlock', A)

    def test_unlock_force_breaks_and_reports_loss_window(self):
        created = int(time.time()) - 300
        self.disk(owner='compute-2', gen=4,
                  snapshots=[('zv-3-abcdef12', created)])
        out = self.run_ok('unlock', '-f', A).splitlines()
        self.assertEqual('volume %s: lease of compute-2 broken, generation '
                         '4 -> 5 (compute-2 is fenced)' % A, out[0])
        window = int(out[1].split()[2])
        self.assertTrue(300 <= window < 310, out)
        self.assertIn('as of %s' % cli_format.timestamp(created), out[1])
        self.assertEqual([('zfs', 'set', leaselib.FENCED + '=compute-2',
                           leaselib.GENERATION + '=5',
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'set'))
        self.assertEqual([('zfs', 'inherit', leaselib.OWNER,
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'inherit'))
        # The fenced host's origin export (and session) is taken back.
        self.assertEqual(['volume-' + A], self.unexported)

    def test_grant_and_revoke_a_host(self):
        # Issue 21, 1: the operator's explicit grant, for an attach of
        # their own on that host; the vault leases to no other.
        self.disk(owner='-', gen=5)
        self.assertEqual('volume %s granted to compute-2\n' % A,
                         self.run_ok('grant', A, 'compute-2'))
        self.assertEqual([('zfs', 'set', leaselib.GRANTED + '=compute-2',
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'set'))
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        ','.join(leaselib.PROPS), out='%s\tcompute-2\n'
                        % leaselib.GRANTED)
        self.assertEqual('volume %s: compute-2 may no longer lease it '
                         '(granted: none)\n' % A,
                         self.run_ok('revoke', A, 'compute-2'))
        self.assertEqual([('zfs', 'inherit', leaselib.GRANTED,
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'inherit'))

    def test_revoke_of_the_holder_is_refused(self):
        self.disk(owner='compute-2', gen=5)
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        ','.join(leaselib.PROPS), out='%s\tcompute-2\n'
                        '%s\tcompute-2\n%s\t5\n' % (
                            leaselib.GRANTED, leaselib.OWNER,
                            leaselib.GENERATION))
        self.assertRefused('compute-2 holds its lease', 'revoke', A,
                           'compute-2')
        self.assertEqual([], self.execute.commands('zfs', 'inherit'))

    def test_allow_a_fenced_host_back(self):
        self.disk(owner='-', gen=5)
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        ','.join(leaselib.PROPS), out=''.join(
                            '%s\t%s\n' % p for p in (
                                (leaselib.OWNER, '-'),
                                (leaselib.GENERATION, '5'),
                                (leaselib.SYNCED_GUID, '-'),
                                (leaselib.SYNCED_AT, '-'),
                                (leaselib.FENCED, 'compute-2'))))
        self.assertEqual('volume %s: compute-2 may lease it again\n' % A,
                         self.run_ok('allow', A, 'compute-2'))
        self.assertEqual([('zfs', 'inherit', leaselib.FENCED,
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'inherit'))

    def test_discard_refused_while_this_host_holds_the_lease(self):
        # Whatever is recorded here (nothing, after a crash between the
        # seed's receive and recording its generation): not fenced.
        self.engine.vault = types.SimpleNamespace(info=lambda vid: {
            'lease': {'owner': HOST, 'generation': 3}})
        self.assertRefused('%s still holds vault/volume-%s: detach it'
                           % (HOST, A), 'discard', A)

    def test_unlock_force_without_sync_point(self):
        self.disk(owner='compute-2', gen=4)
        self.assertIn('no sync point in the vault',
                      self.run_ok('unlock', '--force', A))

    def test_unlock_of_a_free_disk_changes_nothing(self):
        self.disk(gen=4)
        for argv in (('unlock', A), ('unlock', '-f', A)):
            self.assertIn('not leased (generation 4): nothing changed',
                          self.run_ok(*argv))
        self.assertEqual([], self.execute.commands('zfs', 'set'))
        self.assertEqual([], self.execute.commands('zfs', 'inherit'))


class MappedTest(CLITestCase):

    def test_mapped_json(self):
        # A seeding (linear over its -snap), B cutting over (linear over
        # its -merge), C local (linear over its zvol).
        self.execute.on('dmsetup', 'table', out=(
            'vg-root: 0 8 linear 8:1 0\n'
            'zvault-{a}: 0 2097152 linear 253:1 0\n'
            'zvault-{a}-snap: 0 2097152 snapshot 8:0 230:0 P 16\n'
            'zvault-{b}: 0 4194304 linear 253:3 0\n'
            'zvault-{b}-merge: 0 4194304 snapshot-merge 230:16 230:32 P 16\n'
            'zvault-{c}: 0 2097152 linear 230:48 0\n').format(a=A, b=B, c=C))
        self.execute.on('dmsetup', 'info', '-c', out=(
            'vg-root\t253\t9\t1\n'
            'zvault-{a}\t253\t0\t1\n'
            'zvault-{a}-snap\t253\t1\t1\n'
            'zvault-{b}\t253\t2\t0\n'
            'zvault-{b}-merge\t253\t3\t1\n'
            'zvault-{c}\t253\t4\t1\n').format(a=A, b=B, c=C))
        self.mapped_over(A, 'zvault-%s-snap' % A)
        self.mapped_over(B, 'zvault-%s-merge' % B)
        self.mapped_over(C, 'zd48')
        out = self.json_out('mapped')
        self.assertEqual([
            {'Volume': A, 'Device': '/dev/mapper/zvault-' + A,
             'Table': 'snapshot', 'State': 'seeding', 'Open': 1,
             'Size': GiB},
            {'Volume': B, 'Device': '/dev/mapper/zvault-' + B,
             'Table': 'snapshot-merge', 'State': 'seeding', 'Open': 0,
             'Size': 2 * GiB},
            {'Volume': C, 'Device': '/dev/mapper/zvault-' + C,
             'Table': 'linear', 'State': 'local', 'Open': 1, 'Size': GiB}],
            out)
        self.assertEqual(1, len(self.execute.commands(
            'dmsetup', 'info', '-c', '--noheadings', '--separator', '\t',
            '-o', 'name,major,minor,open')))

    def test_none_mapped(self):
        self.assertEqual([], self.json_out('mapped'))


class OrchestratedTest(CLITestCase):

    def disk(self, owner='-'):
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        ','.join(authority._LIST_PROPS),
                        out=zrow('vault/volume-' + A, GiB, owner=owner,
                                 gen=1) + '\n')

    def test_attach_seeds_with_a_bar_on_a_terminal(self):
        self.disk()
        self.mapped_over(A, 'zvault-%s-snap' % A)
        rc = self.run_cli('attach', A, stdout=Terminal())
        self.assertEqual(0, rc, self.stderr.getvalue())
        self.assertEqual([('attach', A), ('seed', A)],
                         self.orchestrator.calls)
        self.assertIn('/dev/mapper/zvault-' + A, self.stdout.getvalue())
        self.assertIn('[0.012, 0.002]', self.stdout.getvalue())
        bar = self.stderr.getvalue()
        self.assertIn('seed 100%% [%s]' % ('#' * 30), bar)
        self.assertIn('1.0 MiB/1.0 MiB', bar)
        self.assertTrue(bar.endswith('\n'))

    def test_attach_no_bar_without_terminal(self):
        self.disk()
        self.mapped_over(A, 'zvault-%s-snap' % A)
        out = self.json_out('attach', A)
        self.assertEqual('/dev/mapper/zvault-' + A, out['Device'])
        self.assertEqual('', self.stderr.getvalue())

    def test_attach_no_seed(self):
        self.disk()
        self.mapped_over(A, 'zvault-%s-snap' % A)
        out = self.json_out('attach', '--no-seed', A)
        self.assertEqual([('attach', A)], self.orchestrator.calls)
        self.assertEqual(('seeding', None),
                         (out['State'], out['Cut-over pauses (s)']))

    def test_attach_without_a_seed_to_run(self):
        self.disk()
        for below, state in (('zd16', 'local'), ('sdb', 'direct')):
            self.mapped_over(A, below)
            self.orchestrator.calls = []
            out = self.json_out('attach', A)
            self.assertEqual([('attach', A)], self.orchestrator.calls)
            self.assertEqual(state, out['State'])

    def test_attach_leased_elsewhere_refused(self):
        self.disk(owner='compute-2')
        self.assertRefused('leased to compute-2', 'attach', A)

    def test_attach_bad_id_refused(self):
        self.assertRefused('invalid id', 'attach', A + 'x')
        self.assertEqual([], self.execute.calls)

    def test_sync(self):
        self.disk(owner=HOST)
        out = self.json_out('sync', A)
        self.assertEqual([('sync', A)], self.orchestrator.calls)
        self.assertEqual(('987', 4096, 0.25),
                         (out['GUID'], out['Bytes'], out['Seconds']))

    def test_sync_of_a_disk_in_the_vault_refused(self):
        self.disk()
        self.assertRefused('nothing to sync', 'sync', A)

    def test_detach(self):
        self.disk(owner=HOST)
        out = self.json_out('detach', A)
        self.assertEqual([('detach', A)], self.orchestrator.calls)
        self.assertEqual((A, 'in vault', None),
                         (out['Volume'], out['State'], out['Sync point']))

    def test_unknown_command(self):
        self.assertEqual(2, self.run_cli('frobnicate'))
        self.assertEqual([], self.orchestrator.calls)


def local_props(*rows):
    """``zfs get -o name,property,value,source`` lines (source local)."""
    return ''.join('%s\t%s\t%s\tlocal\n' % (ds, attributes.PROPERTIES[n], v)
                   for ds, n, v in rows)


class AttributesTest(CLITestCase):

    GET_LOCAL = ('zfs', 'get', '-Hp', '-o', 'name,property,value,source')

    def setUp(self):
        super(AttributesTest, self).setUp()
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        ','.join(authority._LIST_PROPS),
                        out=zrow('vault/volume-' + A, GiB) + '\n')

    def test_show_effective_attributes(self):
        self.execute.on(*self.GET_LOCAL, out=local_props(
            ('vault', 'upload_rate', '1048576'),
            ('vault', 'frequency', '600'),
            ('vault/volume-' + A, 'frequency', '120'),
            ('vault/volume-' + A, 'next_sync', '1700000000')))
        out = self.json_out('show', A)
        self.assertEqual((120, '2023-11-14T22:13:20Z', 1048576, 'sync',
                          ['frequency', 'next_sync']),
                         (out['Frequency (s)'], out['Next sync'],
                          out['Upload rate (B/s)'], out['Sync mode'],
                          out['Set here']))

    def test_set(self):
        self.assertEqual(0, self.run_cli('set', A, '--frequency', '5m',
                                         '--upload-rate', '10M',
                                         '--sync-mode', 'nosync'))
        self.assertEqual([(
            'zfs', 'set',
            attributes.PROPERTIES['frequency'] + '=300',
            attributes.PROPERTIES['sync_mode'] + '=nosync',
            attributes.PROPERTIES['upload_rate'] + '=10485760',
            'vault/volume-' + A)], self.execute.commands('zfs', 'set'))

    def test_bad_values_refused_before_any_command(self):
        for argv, message in (
                (('--frequency', '5x'), "invalid frequency '5x'"),
                (('--frequency', '10'), 'must be between 60'),
                (('--upload-rate', 'fast'), "invalid upload_rate 'fast'"),
                (('--sync-mode', 'maybe'), "invalid sync_mode 'maybe'"),
                (('--next-sync', 'tomorrow'), "invalid next_sync"),
                ((), 'nothing to set')):
            self.assertRefused(message, 'set', A, *argv)
        self.assertRefused('invalid id', 'set', 'x', '--frequency', '5m')
        self.assertEqual([], self.execute.calls)

    def test_set_missing_volume(self):
        self.execute.on('zfs', 'list', out=NOT_FOUND)
        self.assertRefused('not in the vault', 'set', B, '--frequency', '5m')

    def test_unset(self):
        self.assertEqual(0, self.run_cli('unset', A, 'frequency',
                                         'next-sync'))
        self.assertEqual(
            [('zfs', 'inherit', attributes.PROPERTIES['frequency'],
              'vault/volume-' + A),
             ('zfs', 'inherit', attributes.PROPERTIES['next_sync'],
              'vault/volume-' + A)], self.execute.commands('zfs', 'inherit'))

    def test_unset_unknown_refused(self):
        self.assertRefused("unknown volume attribute 'colour'", 'unset', A,
                           'frequency', 'colour')
        self.assertEqual([], self.execute.calls)

    def test_vault_show(self):
        self.execute.on(*self.GET_LOCAL, out=local_props(
            ('vault', 'sync_workers', '4')))
        self.assertEqual({'Vault': 'vault', 'Sync workers': 4,
                          'Frequency (s)': 300, 'Upload rate (B/s)': 0,
                          'Download rate (B/s)': 0,
                          'Set here': ['sync_workers']},
                         self.json_out('vault', 'show'))

    def test_vault_set_and_unset(self):
        self.assertEqual(0, self.run_cli('vault', 'set', '--sync-workers',
                                         '4', '--download-rate', '1.5GiB'))
        self.assertEqual(0, self.run_cli('vault', 'unset', 'frequency'))
        self.assertEqual([(
            'zfs', 'set',
            attributes.PROPERTIES['download_rate'] + '=1610612736',
            attributes.PROPERTIES['sync_workers'] + '=4', 'vault')],
            self.execute.commands('zfs', 'set'))
        self.assertEqual([('zfs', 'inherit',
                           attributes.PROPERTIES['frequency'], 'vault')],
                         self.execute.commands('zfs', 'inherit'))

    def test_vault_bad_values_refused(self):
        self.assertRefused('invalid sync_workers 0: must be between 1 and 64',
                           'vault', 'set', '--sync-workers', '0')
        self.assertRefused('unknown vault attribute', 'vault', 'unset',
                           'sync_mode')
        self.assertEqual([], self.execute.calls)


ESC = '\x1b[2J'
#: Host names with a Cyrillic 'о' and in fullwidth letters.
LOOK_ALIKE = 'c\u043empute-1'
FULLWIDTH = '\uff43\uff4f\uff4d\uff50\uff55\uff54\uff45'

#: Issue 8, defect 8: hostile values of every argument, each with the
#: argv around it ({} is where it goes).
HOSTILE_VOLUMES = (A + '\n', '{%s}' % A, A.replace('1', '\u0661'),
                   '../' + A, A + ';reboot', '$(reboot)', ESC, '', '-o',
                   A + '\0', 'x' * 5000)
VOLUME_COMMANDS = (('show', '{}'), ('attach', '{}'), ('detach', '{}'),
                   ('sync', '{}'), ('discard', '{}'), ('lock', '{}'),
                   ('unlock', '{}'), ('unlock', '-f', '{}'),
                   ('allow', '{}', 'compute-2'),
                   ('grant', '{}', 'compute-2'),
                   ('revoke', '{}', 'compute-2'),
                   ('set', '{}', '--frequency', '5m'),
                   ('unset', '{}', 'frequency'))
HOSTILE_ARGUMENTS = (
    [('lock', A, '--host={}', host) for host in (
        '-o', '', 'a b', ESC, 'compute-1\n', LOOK_ALIKE, FULLWIDTH,
        'compute_1', 'x' * 254, 'compute-1;reboot', '$(id)', 'a/b',
        'compute-1.', 'a..b', 'compute-')] +
    [(verb, A, '--', '{}', host) for host in (
        '-o', ESC, 'compute-1\n', LOOK_ALIKE, '', 'a b', 'compute_1')
     for verb in ('allow', 'grant', 'revoke')] +
    [('set', A, option, '{}', value) for option, value in (
        ('--frequency', '5m\n'), ('--frequency', '\u0663\u0660\u0660'),
        ('--frequency', '9' * 5000), ('--frequency', ' 300'),
        ('--frequency', '5\tm'), ('--upload-rate', '10M\n'),
        ('--upload-rate', '\u0661\u0660'), ('--upload-rate', '10M;id'),
        ('--download-rate', '-5'), ('--download-rate', 'inf'),
        ('--next-sync', 'now\n'), ('--next-sync', ESC),
        ('--next-sync', '\u0661' * 10), ('--sync-mode', 'sync\n'),
        ('--sync-mode', 'SYNC'), ('--sync-mode', '\u0455ync'))] +
    [('vault', 'set', option, '{}', value) for option, value in (
        ('--sync-workers', '\u0664'), ('--sync-workers', '4\n'),
        ('--sync-workers', '\u00b2'), ('--frequency', '5\tm'),
        ('--upload-rate', '1e3'))] +
    [('unset', A, '{}', name) for name in (
        'frequency\n', 'next_sync' + ESC, 'colour', '-o')] +
    [('vault', 'unset', '{}', name) for name in (
        'sync_workers\n', 'sync_mode')] +
    [('list', '{}', '--' + ESC), ('mapped', '{}', '-x' + ESC),
     ('lock', A, '{}', '--host')])


def hostile_argv():
    """Every hostile argv, with the value it tries."""
    for value in HOSTILE_VOLUMES:
        for command in VOLUME_COMMANDS:
            yield value, [value if word == '{}' else word
                          for word in command]
    for spec in HOSTILE_ARGUMENTS:
        value = spec[-1]
        argv = [w for w in spec[:-1] if w != '{}']
        if spec[-2] == '{}':  # a value on its own, after its option
            argv.append(value)
        elif argv[-1].endswith('={}'):
            argv[-1] = argv[-1][:-2] + value
        else:  # a word that is itself the hostile value
            argv = list(spec[:-1])
            argv[argv.index('{}')] = value
        yield value, argv


class HostileArgumentTest(CLITestCase):
    """Each refused with one printable line before any command runs."""

    def test_every_argument_refused_before_any_command(self):
        tried = 0
        for value, argv in hostile_argv():
            rc = self.run_cli(*argv)
            err = self.stderr.getvalue()
            what = '%s -> %s: %s' % (ascii(argv), rc, ascii(err))
            self.assertNotEqual(0, rc, what)
            self.assertEqual(1, len(err.splitlines()), what)
            self.assertTrue(err.endswith('\n'), what)
            self.assertTrue(all(' ' <= c <= '~' for c in err[:-1]), what)
            self.assertEqual('', self.stdout.getvalue(), what)
            self.assertEqual([], self.execute.calls, what)
            self.assertEqual([], self.orchestrator.calls, what)
            tried += 1
        self.assertEqual(len(HOSTILE_VOLUMES) * len(VOLUME_COMMANDS)
                         + len(HOSTILE_ARGUMENTS), tried)

    def test_a_hostile_id_builds_nothing(self):
        # The engine (os-brick reads the initiator file, runs ldconfig and
        # iscsiadm) was made before some commands read their VOLUME.
        built = []

        class Backend(object):
            def __getattr__(self, name):
                built.append(name)
                raise AssertionError('%s built for a hostile id' % name)

        class App(cli.ZFSVaultApp):
            def make_backend(self):
                return Backend()

        ids = len(HOSTILE_VOLUMES) * len(VOLUME_COMMANDS)
        for _value, argv in list(hostile_argv())[:ids]:
            err = io.StringIO()
            rc = App(conf=cfg.ConfigOpts(),
                     command_manager=cli_commands.command_manager(),
                     stdout=io.StringIO(), stderr=err).run(
                ['--config-file', self.conf_file] + list(argv))
            self.assertNotEqual(0, rc, argv)
            self.assertEqual([], built, (argv, err.getvalue()))

    def test_argparse_refusal_is_one_escaped_line(self):
        # argparse printed its usage, then the argument raw: the escape
        # reached the terminal.
        self.assertEqual(2, self.run_cli('list', '--' + ESC))
        self.assertEqual("zfs-vault list: error: 'unrecognized arguments: "
                         "--\\x1b[2J' (see zfs-vault list --help)\n",
                         self.stderr.getvalue())

    def test_trailing_newline_volume_refused(self):
        self.assertRefused("invalid id '%s\\n'" % A, 'show', A + '\n')
        self.assertEqual([], self.execute.calls)

    def test_non_canonical_volume_id_refused(self):
        # uuid.UUID() read these; the vault was then asked about them.
        for value in ('{%s}' % A, A.replace('-', ''), 'urn:uuid:' + A):
            self.assertRefused('invalid id', 'show', value)
        self.assertEqual([], self.execute.calls)

    def test_empty_host_is_not_this_host(self):
        self.assertRefused("invalid host name ''", 'lock', A, '--host=')
        self.assertEqual([], self.execute.calls)

    def test_look_alike_host_refused_escaped(self):
        self.assertRefused("invalid host name 'c\\u043empute-1'", 'lock', A,
                           '--host', LOOK_ALIKE)
        self.assertEqual([], self.execute.calls)


class HostileOwnerTest(CLITestCase):
    """A lease owner set by hand (``zfs set``) is shown escaped."""

    OWNER = 'evil' + ESC + LOOK_ALIKE

    def setUp(self):
        super(HostileOwnerTest, self).setUp()
        row = zrow('vault/volume-' + A, GiB, owner=self.OWNER, gen=4,
                   guid='1' + ESC)
        self.execute.on(*LIST_VAULT, out='%s\n%s\n' % (zrow('vault'), row))
        self.execute.on('zfs', 'list', '-Hp', '-o',
                        ','.join(authority._LIST_PROPS), out=row + '\n')
        self.execute.on('zfs', 'get', '-Hp', '-o', 'property,value',
                        ','.join(leaselib.PROPS), out=''.join(
                            '%s\t%s\n' % p for p in (
                                (leaselib.OWNER, self.OWNER),
                                (leaselib.GENERATION, '4'),
                                (leaselib.SYNCED_GUID, '-'),
                                (leaselib.SYNCED_AT, '-'))))

    def test_list_escapes_the_owner(self):
        for fmt in ('csv', 'table', 'value'):
            self.assertEqual(0, self.run_cli('list', '-f', fmt))
            out = self.stdout.getvalue()
            self.assertNotIn('\x1b', out, fmt)
            self.assertNotIn('\u043e', out, fmt)
        self.assertIn("'evil\\x1b[2Jc\\u043empute-1'", out)
        row, = self.json_out('list')
        self.assertEqual(ascii(self.OWNER), row['Lease owner'])
        self.assertEqual(ascii('1' + ESC), row['Synced GUID'])

    def test_refusal_naming_the_owner_is_one_escaped_line(self):
        rc = self.run_cli('lock', A, '--host', 'compute-9')
        self.assertEqual(1, rc)
        err = self.stderr.getvalue()
        self.assertEqual(1, len(err.splitlines()), ascii(err))
        self.assertNotIn('\x1b', err)
        self.assertIn('evil\\x1b[2Jc\\u043empute-1', err)
        self.assertEqual([], self.execute.commands('zfs', 'set'))

    def test_unlock_force_escapes_the_owner(self):
        self.assertEqual(0, self.run_cli('unlock', '-f', A),
                         self.stderr.getvalue())
        out = self.stdout.getvalue()
        self.assertNotIn('\x1b', out)
        self.assertIn('lease of %s broken' % ascii(self.OWNER), out)
        # Broken all the same; a name no host can hold is not fenced.
        self.assertEqual([('zfs', 'set', leaselib.GENERATION + '=5',
                           'vault/volume-' + A)],
                         self.execute.commands('zfs', 'set'))

    def test_printable(self):
        self.assertEqual('compute-1', cli_format.printable('compute-1'))
        self.assertEqual("'a\\nb'", cli_format.printable('a\nb'))
        self.assertEqual("'\\x1b[2J'", cli_format.printable(ESC))
        self.assertEqual("'c\\u043empute-1'",
                         cli_format.printable(LOOK_ALIKE))
        for value in (None, 7, ['a\nb']):
            self.assertIs(value, cli_format.printable(value))


class AppTest(CLITestCase):

    def test_config_file_is_read(self):
        self.conf_file = self.write_conf(
            '[zfs_vault_agent]\nhost = node-7\nstate_path = /srv/zv\n')
        self.vault(zrow('vault'))
        self.assertEqual(0, self.run_cli('list'))
        self.assertEqual('node-7', self.conf.zfs_vault_agent.host)
        self.assertEqual('sqlite:////srv/zv/logbook.sqlite',
                         agent.logbook_url(self.conf))

    def test_every_entry_point_is_a_command(self):
        names = cli_commands.entry_points()
        self.assertEqual({'list', 'show', 'attach', 'detach', 'sync',
                          'lock', 'unlock', 'allow', 'grant', 'revoke',
                          'discard', 'mapped',
                          'set', 'unset', 'vault_show', 'vault_set',
                          'vault_unset'},
                         set(names))
        script = cli_commands.entry_points('console_scripts')['zfs-vault']
        self.assertIs(cli.main, cli_commands.load(script))

    def test_library_info_hidden_ours_shown(self):
        import logging

        class Engine(object):
            def __getattr__(self, name):
                logging.getLogger('alembic.runtime').info('setup plugin x')
                logging.getLogger('cinder_zfs_vault.lease').info('taken')
                raise exception.NotFound('stop here')

        self.engine = Engine()
        self.run_cli('mapped')
        self.assertEqual('taken\nstop here\n', self.stderr.getvalue())

    def test_logging_left_as_found(self):
        import logging
        before = list(logging.getLogger('').handlers)
        self.vault(zrow('vault'))
        self.run_cli('list')
        self.assertEqual(before, logging.getLogger('').handlers)


class ProgressBarTest(testtools.TestCase):

    def test_line(self):
        bar = cli_format.ProgressBar(io.StringIO(), 'sync')
        self.assertEqual('sync  25%% [%s%s]  256.0 KiB/1.0 MiB  128.0 KiB/s'
                         % ('#' * 7, '-' * 23),
                         bar.line(256 * 1024, 1024 * 1024, 2.0))
        # A resumed stream: its size is unknown.
        self.assertEqual('sync  3.0 GiB  1.5 GiB/s',
                         bar.line(3 * GiB, 0, 2.0))

    def test_redraw_at_most_every_interval(self):
        clock = iter([0.0, 0.0, 0.1, 0.3, 0.35]).__next__
        out = io.StringIO()
        bar = cli_format.ProgressBar(out, 'seed', clock=clock)
        bar(1, 100)   # drawn
        bar(2, 100)   # too soon
        bar(3, 100)   # drawn
        bar(99, 100)  # too soon, but finish() draws it
        bar.finish()
        lines = out.getvalue().split('\r')[1:]
        self.assertEqual(3, len(lines))
        self.assertIn('  1%', lines[0])
        self.assertIn('  3%', lines[1])
        self.assertIn(' 99%', lines[2])
        self.assertTrue(lines[2].endswith('\n'))

    def test_shorter_line_overwrites_a_longer_one(self):
        clock = iter([0.0, 0.0, 1.0]).__next__
        out = io.StringIO()
        bar = cli_format.ProgressBar(out, 'sync', clock=clock)
        bar(5 * GiB, 0)
        bar(5, 0)
        first, second = out.getvalue().split('\r')[1:]
        self.assertEqual(len(first), len(second))

    def test_nothing_reported_nothing_drawn(self):
        out = io.StringIO()
        cli_format.ProgressBar(out, 'sync').finish()
        self.assertEqual('', out.getvalue())

    def test_human_bytes(self):
        self.assertEqual('512 B', cli_format.human_bytes(512))
        self.assertEqual('1.5 KiB', cli_format.human_bytes(1536))
        self.assertEqual('2048.0 TiB', cli_format.human_bytes(2 * 1024 ** 5))


class AgentTest(testtools.TestCase):

    def conf(self, **values):
        conf = cfg.ConfigOpts()
        agent.register_opts(conf)
        conf([], default_config_files=[])
        for name, value in values.items():
            conf.set_override(name, value, group='zfs_vault_agent')
        return conf

    def make(self, conf):
        self.useFixture(fixtures.MockPatch(
            'os_brick.initiator.connectors.iscsi.ISCSIConnector.'
            'get_initiator', return_value='iqn.1993-08.org.debian:01:abc'))
        return agent.make_engine(conf)

    def test_engine_from_config(self):
        engine = self.make(self.conf(host='node-1', vault_dataset='tank/v',
                                     compute_dataset='fast/r',
                                     portal_ip='192.0.2.5', portal_port=3261))
        self.assertEqual(('node-1', 'tank/v', 'fast/r'),
                         (engine.host, engine.vault_root,
                          engine.compute_root))
        self.assertEqual('192.0.2.5:3261', engine.portal)
        # No vault host: the vault is this host, its endpoint a process.
        self.assertEqual(['--host', 'node-1', '--initiator',
                          'iqn.1993-08.org.debian:01:abc'],
                         engine.vault.transport[3:7])
        self.assertIsInstance(engine.compute_zfs._execute,
                              executors.LocalExecutor)
        self.assertEqual(replica.DEFAULTS, engine.settings)
        self.assertEqual(300, engine.compute_zfs._execute.timeout)

    def test_bounds_from_config(self):
        # Issue 8: every timeout set in one place, tunable by an operator.
        engine = self.make(self.conf(merge_timeout=1200, stall_timeout=30,
                                     device_timeout=90, slot_timeout=7300,
                                     keep_local_sync_points=4,
                                     command_timeout=45))
        self.assertEqual((None, None, 4, 1200, 30, 90, 7300),
                         tuple(engine.settings))
        self.assertEqual(45, engine.compute_zfs._execute.timeout)
        self.assertEqual(45, engine.dm._execute.timeout)

    def test_vault_over_ssh(self):
        engine = self.make(self.conf(zfs_vault_ssh_host='vault.example',
                                     zfs_vault_ssh_private_key='/k',
                                     zfs_vault_ssh_known_hosts='/kh'))
        argv = engine.vault.argv('info', A)
        self.assertEqual(['ssh', '-p', '22', '-l', 'root', '-i', '/k'],
                         argv[:7])
        self.assertIn('StrictHostKeyChecking=yes', argv)
        self.assertIn('UserKnownHostsFile=/kh', argv)
        self.assertEqual(['vault.example', 'info ' + A], argv[-2:])
        self.assertIsInstance(engine.compute_zfs._execute,
                              executors.LocalExecutor)

    def test_shared_connection_is_per_key(self):
        # One host's key names that host on the vault: another key (a
        # second identity on this machine) must not reuse its connection.
        paths = set()
        for key in ('/k1', '/k2'):
            engine = self.make(self.conf(zfs_vault_ssh_host='vault.example',
                                         zfs_vault_ssh_private_key=key,
                                         zfs_vault_ssh_known_hosts='/kh',
                                         state_path=self.useFixture(
                                             fixtures.TempDir()).path))
            argv = engine.vault.argv('info', A)
            paths.add([a for a in argv if a.startswith('ControlPath=')][0]
                      .rsplit('/', 1)[1])
            self.assertNotIn('ControlMaster=auto',
                             engine.vault.argv('send', A, 1, 'zv-1-0123abcd',
                                               stream=True))
        self.assertEqual(2, len(paths))

    def test_vault_over_ssh_needs_key_and_known_hosts(self):
        for values in ({'zfs_vault_ssh_private_key': '/k'},
                       {'zfs_vault_ssh_known_hosts': '/kh'}):
            self.assertRaises(exception.InvalidInput, self.make, self.conf(
                zfs_vault_ssh_host='vault.example', **values))

    def test_bad_dataset_refused(self):
        self.assertRaises(exception.InvalidInput, self.make,
                          self.conf(vault_dataset='-rf'))

    def test_bad_host_refused(self):
        # [zfs_vault_agent] host is the lease owner this host writes.
        for host in ('-o', 'a b', 'compute-1\n', 'c\u043empute-1',
                     'compute-1\x1b[2J', ''):
            self.assertRaises(exception.InvalidInput, self.make,
                              self.conf(host=host))

    def test_defaults(self):
        conf = self.conf()
        self.assertEqual(('vault', 'compute', '127.0.0.1', 3260),
                         (conf.zfs_vault_agent.vault_dataset,
                          conf.zfs_vault_agent.compute_dataset,
                          conf.zfs_vault_agent.portal_ip,
                          conf.zfs_vault_agent.portal_port))
        self.assertEqual('sqlite:////var/lib/zfs-vault/logbook.sqlite',
                         agent.logbook_url(conf))
