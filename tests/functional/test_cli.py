"""The ``zfs-vault`` CLI against real zvols, leases and dm devices.

The commands run in this process through the cliff app (as the console
script does, with a configuration file written here and the global
oslo.config object), and once as a separate process.
"""

import io
import json
import os
import subprocess
import sys
import tempfile

from oslo_config import cfg

from cinder_zfs_vault import agent
from cinder_zfs_vault.cmd import cli
from cinder_zfs_vault import flows
from tests import cli_commands
from tests.functional import test_replica
from tools import labkit

MiB = 1024 * 1024
GiB = 1024 * MiB
HOST = 'compute-1'  # labkit.make_engine's host

CONF_TEMPLATE = """[zfs_vault_agent]
host = %(host)s
vault_dataset = vault
compute_dataset = compute
portal_ip = 127.0.0.1
state_path = %(state)s
"""

# What the installed console script runs, with setup.cfg's commands (this
# tree is not installed in the lab, so stevedore cannot find them).
SCRIPT = ('import sys; from cinder_zfs_vault.cmd import cli; '
          'from tests import cli_commands; '
          'sys.exit(cli.main(command_manager=cli_commands.command_manager()))')


class CLITestCase(test_replica.ReplicaTestCase):

    def setUp(self):
        super(CLITestCase, self).setUp()
        state = tempfile.mkdtemp(prefix='zfs-vault-cli-')
        self.conf_file = os.path.join(state, 'zfs-vault.conf')
        with open(self.conf_file, 'w') as f:
            f.write(CONF_TEMPLATE % {'host': HOST, 'state': state})

    def cli(self, *argv):
        """Run ``zfs-vault --config-file <ours> argv``: (rc, out, err)."""
        out, err = io.StringIO(), io.StringIO()
        app = cli.ZFSVaultApp(conf=cfg.CONF,
                              command_manager=cli_commands.command_manager(),
                              stdout=out, stderr=err)
        rc = app.run(['--config-file', self.conf_file] + list(argv))
        return rc, out.getvalue(), err.getvalue()

    def ok(self, *argv):
        rc, out, err = self.cli(*argv)
        self.assertEqual(0, rc, err)
        return out

    def json(self, *argv):
        return json.loads(self.ok(*(argv + ('-f', 'json'))))

    def refused(self, message, *argv):
        rc, out, err = self.cli(*argv)
        self.assertEqual(1, rc, out)
        self.assertIn(message, err)
        self.assertEqual(1, len(err.strip().splitlines()), err)
        return err

    def listed(self, volume_id):
        rows = [r for r in self.json('list') if r['Volume'] == volume_id]
        self.assertEqual(1, len(rows))
        return rows[0]

    def leased_volume(self):
        """A vault volume returned and unleased at cleanup."""
        vol = self.volume(size=1)
        self.addCleanup(self._free, vol.id)
        self.addCleanup(self._return_disk, vol.id)
        return vol

    def _free(self, volume_id):
        """Cleanup: a lease a failed test left would block the delete."""
        dataset = self.engine.names(volume_id).vault
        if self.engine.leases.get(dataset).owner is not None:
            self.engine.leases.break_lease(dataset)

    def props(self, dataset):
        """The user properties of ``dataset`` with their sources."""
        out = labkit.run('zfs', 'get', '-Hp', '-o', 'property,value,source',
                         'all', dataset)
        return [line for line in out.splitlines()
                if ':' in line.split('\t')[0]]


class LeaseCommandsTest(CLITestCase):

    def test_list_lock_unlock_and_break(self):
        vol = self.leased_volume()
        dataset = 'vault/' + vol.name
        row = self.listed(vol.id)
        self.assertEqual(('in vault', None, 0, None),
                         (row['State'], row['Lease owner'],
                          row['Generation'], row['Unsynced bytes']))

        self.assertIn('leased to compute-9, generation 1',
                      self.ok('lock', vol.id, '--host', 'compute-9'))
        lease = self.engine.leases.get(dataset)
        self.assertEqual(('compute-9', 1), (lease.owner, lease.generation))
        row = self.listed(vol.id)
        self.assertEqual(('remote', 'compute-9', 1),
                         (row['State'], row['Lease owner'],
                          row['Generation']))

        # Held elsewhere: another host's lock and a plain unlock are refused.
        before = self.props(dataset)
        self.refused('leased to compute-9', 'lock', vol.id, '--host',
                     'compute-8')
        self.refused('unlock -f', 'unlock', vol.id)
        self.assertEqual(before, self.props(dataset))

        # unlock -f breaks it: owner gone, generation bumped (fencing).
        out = self.ok('unlock', '-f', vol.id)
        self.assertIn('lease of compute-9 broken, generation 1 -> 2', out)
        self.assertIn('loss window', out)
        lease = self.engine.leases.get(dataset)
        self.assertEqual((None, 2), (lease.owner, lease.generation))

        # This host locks and unlocks: release keeps the generation.
        self.assertIn('leased to %s, generation 3' % HOST,
                      self.ok('lock', vol.id))
        self.assertIn('released by %s (generation 3)' % HOST,
                      self.ok('unlock', vol.id))
        lease = self.engine.leases.get(dataset)
        self.assertEqual((None, 3), (lease.owner, lease.generation))
        self.assertEqual(3, self.json('show', vol.id)['Generation'])

    def test_refusals_change_nothing(self):
        vol = self.leased_volume()
        dataset = 'vault/' + vol.name
        before = self.props(dataset), self.props('vault')
        self.refused("invalid frequency '5x'", 'set', vol.id,
                     '--frequency', '5x')
        self.refused("invalid upload_rate 'fast'", 'set', vol.id,
                     '--frequency', '5m', '--upload-rate', 'fast')
        self.refused("unknown volume attribute 'colour'", 'unset', vol.id,
                     'colour')
        self.refused('invalid sync_workers 0', 'vault', 'set',
                     '--sync-workers', '0')
        self.refused("invalid id 'not-a-uuid'", 'show', 'not-a-uuid')
        self.refused("invalid host name 'a b'", 'lock', vol.id, '--host',
                     'a b')
        missing = '00000000-0000-4000-8000-000000000000'
        self.refused('volume %s is not in the vault' % missing, 'lock',
                     missing)
        self.assertEqual(before, (self.props(dataset), self.props('vault')))

    def test_set_and_unset_attributes(self):
        vol = self.leased_volume()
        self.ok('set', vol.id, '--frequency', '10m', '--upload-rate', '10M')
        self.addCleanup(self.cli, 'vault', 'unset', 'sync_workers',
                        'download_rate')
        self.ok('vault', 'set', '--sync-workers', '3', '--download-rate',
                '1M')
        shown = self.json('show', vol.id)
        self.assertEqual((600, 10 * MiB, MiB, ['frequency', 'upload_rate']),
                         (shown['Frequency (s)'], shown['Upload rate (B/s)'],
                          shown['Download rate (B/s)'], shown['Set here']))
        self.assertEqual('600', self.prop('vault/' + vol.name,
                                          'org.openstack.zfsvault:frequency'))
        self.ok('unset', vol.id, 'frequency')
        shown = self.json('show', vol.id)
        self.assertEqual((300, ['upload_rate']),
                         (shown['Frequency (s)'], shown['Set here']))
        vault = self.json('vault', 'show')
        self.assertEqual((3, MiB, ['download_rate', 'sync_workers']),
                         (vault['Sync workers'], vault['Download rate (B/s)'],
                          vault['Set here']))


class ReplicaViewTest(CLITestCase):

    def test_mapped_and_list_through_seed_cutover_and_sync(self):
        vol = self.disk(size=1)
        self.engine.attach(vol.id)
        device = '/dev/mapper/zvault-' + vol.id
        mapped = [d for d in self.json('mapped') if d['Volume'] == vol.id]
        self.assertEqual([{'Volume': vol.id, 'Device': device,
                           'Table': 'snapshot', 'State': 'seeding',
                           'Open': 0, 'Size': GiB}], mapped)
        row = self.listed(vol.id)
        self.assertEqual(('seeding', HOST, 1),
                         (row['State'], row['Lease owner'],
                          row['Generation']))

        self.engine.seed(vol.id)
        self.engine.cutover(vol.id)
        self.assertEqual(['linear'], [d['Table'] for d in self.json('mapped')
                                      if d['Volume'] == vol.id])
        # A sync flow in this host's logbook (as the agent runs it) shows
        # as 'syncing' while it moves the data.
        labkit.write_at(device, 16 * MiB, labkit.pattern('sync', 4 * MiB))
        seen = []

        def progress(done, expected):
            if not seen:
                seen.append(self.listed(vol.id)['State'])
        logbook = flows.Orchestrator(self.engine, agent.logbook_url(cfg.CONF))
        synced = logbook.sync(vol.id, progress=progress)
        self.assertEqual(['syncing'], seen)
        labkit.write_at(device, 0, labkit.pattern('after', 4 * MiB))
        labkit.run('zpool', 'sync', 'compute')
        row = self.listed(vol.id)
        self.assertEqual(('local', HOST, synced.guid),
                         (row['State'], row['Lease owner'],
                          row['Synced GUID']))
        self.assertIsNotNone(row['Last sync'])
        self.assertGreaterEqual(row['Lag (s)'], 0)
        self.assertGreaterEqual(row['Unsynced bytes'], 4 * MiB)
        # A replica here: a plain unlock would strand its writes.
        self.refused('has a replica on this host (local)', 'unlock', vol.id)
        self.assertEqual(HOST, self.engine.leases.get(
            'vault/' + vol.name).owner)

    def test_attach_sync_detach_through_the_orchestrator(self):
        vol = self.disk(size=1)
        dataset = 'vault/' + vol.name
        attached = self.json('attach', vol.id)
        device = '/dev/mapper/zvault-' + vol.id
        self.assertEqual((device, 'local'),
                         (attached['Device'], attached['State']))
        self.assertEqual(2, len(attached['Cut-over pauses (s)']))
        self.assertEqual(labkit.pattern('base', MiB),
                         labkit.read_at(device, 0, MiB))
        labkit.write_at(device, 8 * MiB, labkit.pattern('cli', MiB))
        synced = self.json('sync', vol.id)
        self.assertGreater(synced['Bytes'], 0)
        self.assertEqual(synced['GUID'],
                         self.engine.leases.get(dataset).synced_guid)
        self.assertEqual(synced['GUID'], self.listed(vol.id)['Synced GUID'])
        detached = self.json('detach', vol.id)
        self.assertEqual('in vault', detached['State'])
        lease = self.engine.leases.get(dataset)
        self.assertEqual((None, detached['GUID']),
                         (lease.owner, lease.synced_guid))
        self.assertEqual(labkit.pattern('cli', MiB),
                         labkit.read_at(self.zvol(vol), 8 * MiB, MiB))
        self.assertEqual([], [d for d in self.json('mapped')
                              if d['Volume'] == vol.id])
        self.assertEqual('in vault', self.listed(vol.id)['State'])
        # The CLI's flows ended: nothing in flight in its logbook.
        logbook = flows.Orchestrator(self.engine, agent.logbook_url(cfg.CONF))
        self.assertEqual([], logbook.in_flight())

    def test_list_json_as_a_process(self):
        vol = self.leased_volume()
        self.ok('lock', vol.id, '--host', 'compute-9')
        result = subprocess.run(
            [sys.executable, '-c', SCRIPT, '--config-file', self.conf_file,
             'list', '-f', 'json'], capture_output=True, text=True,
            check=False)
        self.assertEqual(0, result.returncode, result.stderr)
        rows = json.loads(result.stdout)
        row, = [r for r in rows if r['Volume'] == vol.id]
        self.assertEqual(('remote', 'compute-9', 1),
                         (row['State'], row['Lease owner'],
                          row['Generation']))
        self.assertEqual(set(cli.LIST_COLUMNS), set(row))
