"""Power cuts in the middle of the flows (issue 8), a lab run of their own.

ComputePowerCutTest: compute-2 runs the flows (tools/flow_child.py, over
the lab's SSH) and the VM: a durable VerifyingWriter (O_DIRECT | O_DSYNC,
as a VM's flushed writes) that prints every write it had acknowledged. The
test, on compute-1, keeps those acknowledgements, cuts compute-2's power at
the flow's delicate point (its QEMU stops: no shutdown; its page cache, dm
devices, iSCSI session and ZFS's open transaction group are lost), powers
it on again (its pool and root disk as the cut left them), starts its
agent there as its unit would at boot, and waits for the agent to finish
the flow. Then the disk is detached there and every acknowledged write is
looked for in the vault.

VaultPowerCutTest: the vault loses its power during a seed and during a
sync of compute-1's disk.

They need compute-2 as a guest of the lab and take ~half an hour, so they
are not in the lab of hosts that tools/run-tests boots (vault, compute-1),
which must stay within 70 minutes; with the network cut of test_cli, the
lab run of the faults::

    tools/zfs-lab test --hosts vault,compute-1,compute-2 \
        'test_power_cut|NetworkCutTest'
"""

import os
import queue
import shlex
import subprocess
import sys
import threading
import time

import fixtures
import testtools

from cinder_zfs_vault.compute_host import flows
from cinder_zfs_vault.compute_host import scheduler as schedlib
from cinder_zfs_vault.compute_host import service
from cinder_zfs_vault import protocol
from cinder_zfs_vault import status
from tests.functional.hosts import test_replica
from tools import labkit

MiB = 1024 * 1024
BULK = test_replica.BULK
HOST = 'compute-2'
#: compute-2's agent state, on its root disk: kept across the cut.
STATE = '/var/lib/zfs-vault-power'
LOGBOOK = 'sqlite:///%s/logbook.sqlite' % STATE
#: This tree, shared by every guest of the lab.
TREE = os.getcwd()


def _after(first, marker):
    """A marker that matches ``marker`` only after the line ``first``."""
    seen = []

    def match(line):
        seen.extend([True] if line == first else [])
        return bool(seen) and marker(line)
    return match


#: The lab run of the faults boots compute-2 (see above).
POWER_CUT_LAB = labkit.FAULT_LAB


@testtools.skipUnless(POWER_CUT_LAB, 'the power-cut lab run')
class ComputePowerCutTest(test_replica.ReplicaTestCase):

    def setUp(self):
        super(ComputePowerCutTest, self).setUp()
        self.on_host('rm', '-rf', STATE)
        self.on_host('mkdir', '-p', STATE)
        # compute-2's endpoint key, made before any cut and on its disk:
        # a file written less than ~30 s before a power cut comes back
        # empty (ext4's delayed allocation), and an operator's key is old.
        self.on_host(*self.child_argv('key'))
        self.on_host('sync')
        self.addCleanup(self.on_host, 'pkill', '-f', 'tools.flow_child',
                        check=False)

    @staticmethod
    def child_argv(*args):
        """``python -m tools.flow_child LOGBOOK args`` as compute-2 runs it."""
        return ['env', 'PYTHONPATH=' + TREE, 'ZFS_LAB_STATE=' + STATE,
                'PYTHONWARNINGS=ignore', sys.executable, '-m',
                'tools.flow_child', LOGBOOK] + list(args)

    def on_host(self, *argv, check=True):
        return labkit.on_host(HOST, *argv, check=check)

    def cut_during(self, ops, marker, acks_after=0, timeout=600):
        """Run ``ops`` on compute-2; cut its power at ``marker(line)``.

        :param acks_after: writes acknowledged after the marker before
            the cut (none can be while the VM's I/O is held).
        :param timeout: seconds the marker may take to come.
        :returns: the acknowledged writes {block: seq}, the other lines.
        """
        child = subprocess.Popen(
            ['ssh', HOST, '--', '%s 2>>%s/child.log' % (
                shlex.join(self.child_argv(*ops)), STATE)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        said = queue.Queue()
        threading.Thread(target=lambda: [said.put(line) for line in
                                         child.stdout] + [said.put('')],
                         daemon=True).start()
        deadline = time.monotonic() + timeout
        acks, lines, armed, after = {}, [], False, 0
        try:
            while True:
                try:
                    line = said.get(
                        timeout=max(0, deadline - time.monotonic()))
                except queue.Empty:
                    self.fail('no cut after %d s: %s' % (timeout, lines))
                if not line:  # the flows ended before the marker
                    break
                words = line.split()[1:]
                if words[:1] == ['ack']:
                    acks[int(words[1])] = int(words[2])
                    after += armed
                else:
                    lines.append(' '.join(words))
                    armed = armed or marker(lines[-1])
                if armed and after >= acks_after:
                    labkit.power(HOST, False)
                    break
        finally:
            child.kill()
            child.wait(60)
        self.addCleanup(labkit.host_back, HOST)
        self.addCleanup(labkit.power, HOST, True)
        self.assertTrue(armed, lines)
        self.assertFalse([line for line in lines
                          if line == 'finished'
                          or line.startswith('failed')], lines)
        return acks, lines

    def boot_and_recover(self, volume_id, state=('local', 0)):
        """Power compute-2 on; its agent finishes the flow by itself."""
        labkit.power(HOST, True)
        labkit.host_back(HOST)
        self.on_host('sh', '-c', '%s > %s/agent.log 2>&1 < /dev/null &'
                     % (shlex.join(['setsid', 'nohup']
                                   + self.child_argv('agent')), STATE))
        self.addCleanup(self.stop_agent)
        deadline = time.monotonic() + 600
        while self.state(volume_id) != state:
            self.assertLess(time.monotonic(), deadline, 'the agent left '
                            '%s %s after 600 s: %s' % (
                                volume_id, self.state(volume_id),
                                self.agent_log()))
            time.sleep(5)

    def agent_log(self):
        return self.on_host('tail', '-30', STATE + '/agent.log',
                            STATE + '/child.log', check=False)

    def stop_agent(self):
        self.on_host('pkill', '-TERM', '-f', 'tools.flow_child .* agent',
                     check=False)
        for _ in range(120):
            if not self.on_host('pgrep', '-f', 'tools.flow_child .* agent',
                                check=False).strip():
                return
            time.sleep(2)

    def state(self, volume_id):
        """(state, flows in flight) of the disk on compute-2."""
        out = self.on_host(*self.child_argv('state', volume_id))
        said = dict(line.split(' ', 1) for line in out.splitlines())
        return said['state'], int(said['in-flight'])

    def detach_and_check(self, vol, acks):
        """Detach on compute-2; every acknowledged write is in the vault."""
        self.stop_agent()
        out = self.on_host(*self.child_argv('detach:' + vol.id))
        self.assertIn(vol.id + ' finished', out)
        self.check_returned(vol, acks)

    def check_returned(self, vol, acks):
        """The disk is back in the vault with every acknowledged write."""
        self.assertEqual(('in vault', 0), self.state(vol.id))
        n = self.engine.names(vol.id)
        self.assertIsNone(self.vault.leases.get(n.vault).owner)
        self.assertEqual([], self.vault_lab.verify(self.zvol(vol), acks,
                                                   at_least=True))
        # Nothing left on compute-2: zvols, dm devices, iSCSI sessions.
        self.assertEqual('', self.on_host(
            'sh', '-c', 'zfs list -H -o name -r compute | grep %s; '
            'dmsetup ls | grep %s; iscsiadm -m session 2>/dev/null | '
            'grep %s; true' % (vol.id, vol.id, vol.id)))

    def disk(self):
        """A vault volume that compute-2 gives back at cleanup if it can."""
        vol = super(ComputePowerCutTest, self).disk()
        self.addCleanup(self.give_back, vol.id)
        return vol

    def give_back(self, volume_id):
        """Cleanup of a failed test: fence compute-2, discard its copy."""
        if self.vault.leases.get(
                self.engine.names(volume_id).vault).owner is not None:
            self.vault.break_lease(volume_id)
            self.on_host(*self.child_argv('discard:' + volume_id),
                         check=False)

    def big_disk(self):
        vol = self.disk()
        self.vault_random(vol, 128 * MiB, test_replica.BULK)
        return vol

    def test_power_cut_during_attach(self):
        """Cut with the COW zvol made and no device yet: mapped at boot."""
        vol = self.disk()
        self.cut_during(['attach:%s::attach.cow' % vol.id],
                        lambda line: line == 'step attach.cow')
        # The attach resumes, then the agent seeds the disk left on its
        # origin and cuts it over.
        self.boot_and_recover(vol.id)
        self.detach_and_check(vol, {})
        self.assertEqual(labkit.pattern('base', test_replica.BASE),
                         self.vault_read(vol, 0, test_replica.BASE))

    def test_power_cut_during_seed(self):
        """The seed resumes from its token; the COW's writes are merged."""
        vol = self.big_disk()
        acks, _ = self.cut_during(
            ['attach:' + vol.id, 'write:' + vol.id,
             'seed:%s:%d' % (vol.id, 4 * MiB)],
            lambda line: line.startswith('progress ')
            and int(line.split()[1]) >= 8 * MiB)
        self.assertTrue(acks)
        self.boot_and_recover(vol.id)
        self.detach_and_check(vol, acks)

    def test_power_cut_during_cutover_with_device_suspended(self):
        """The VM's held writes are lost with it; all acknowledged kept."""
        vol = self.disk()
        acks, _ = self.cut_during(
            ['attach:' + vol.id, 'write:' + vol.id,
             'seed:%s::cutover.suspended' % vol.id],
            lambda line: line == 'step cutover.suspended')
        self.boot_and_recover(vol.id)
        self.detach_and_check(vol, acks)

    def test_power_cut_during_sync(self):
        """The cut sync resumes from the vault's token after the boot."""
        vol = self.disk()
        acks, _ = self.cut_during(
            ['attach:' + vol.id, 'seed:' + vol.id, 'write:' + vol.id,
             'sync:%s:%d' % (vol.id, 256 * 1024)],
            lambda line: line == 'task Sync RUNNING', acks_after=200)
        # The VM went with the power: its device comes back when nova
        # starts it again (an attach maps the replica); until then the
        # replica waits here, listed as 'releasing' (no device).
        self.boot_and_recover(vol.id, state=('releasing', 0))
        self.detach_and_check(vol, acks)

    def test_power_cut_during_final_sync(self):
        """The detach resumes: the final sync lands, then the replica goes."""
        vol = self.disk()
        acks, _ = self.cut_during(
            ['attach:' + vol.id, 'seed:' + vol.id, 'write:%s:1000' % vol.id,
             'fill:%s:%d' % (vol.id, BULK), 'detach:' + vol.id],
            _after('task FinalSync RUNNING',
                   lambda line: line.startswith('progress ')
                   and int(line.split()[1]) >= 8 * MiB))
        self.assertTrue(acks)
        self.boot_and_recover(vol.id, state=('in vault', 0))
        self.check_returned(vol, acks)
        self.assertEqual(labkit.digest(labkit.pattern('fill', BULK)),
                         self.vault_lab.digest(self.zvol(vol), 128 * MiB,
                                               BULK))


@testtools.skipUnless(POWER_CUT_LAB, 'the power-cut lab run')
class VaultPowerCutTest(test_replica.ReplicaTestCase):
    """The vault loses its power in the middle of a seed or a sync.

    Its QEMU stops where it is; it boots again on its disks (tools/zfs-lab
    serve_faults) and the test waits for it (labkit.vault_back).
    """

    def cut_vault_during(self, command, what):
        """Cut the vault's power 2 s into its process ``command`` (a regex)."""
        self.wait_for(lambda: self.vault_lab.run(
            'pgrep', '-f', command, check=False).strip(), 300, what)
        time.sleep(2)
        labkit.power('vault', False)
        self.addCleanup(labkit.vault_back)
        self.addCleanup(labkit.power, 'vault', True)

    def test_vault_power_cut_during_seed(self):
        """The VM waits for its origin; the agent seeds once it is back.

        Before the cut-over the VM's device reads the vault's iSCSI
        origin: with the vault off its I/O waits in the session (iSCSI's
        replacement timeout, 600 s here) and the seed fails. The vault's
        endpoint server exports the origin again as it starts (LIO's
        configuration is saved at each change, origin.py), the session
        logs in again by itself, the VM's writes go on, and the running
        agent seeds the disk and cuts it over, without a restart.

        The vault's boot rewrote the zvol's objset block (``written`` 0
        before the cut, 8192 after, no data changed): the detach's final
        sync was refused with Diverged until the receive, not ``written``,
        decided whether the vault zvol was modified (plan.py).
        """
        self.useFixture(fixtures.MockPatchObject(service, 'PICK_UP_AFTER',
                                                 2))
        self.useFixture(fixtures.MockPatchObject(service, 'RETRY_FIRST',
                                                 10))
        vol = self.disk()
        self.vault_random(vol, 128 * MiB, BULK)
        n = self.engine.names(vol.id)
        # A seed slow enough to be cut in the middle.
        self.vault.attributes.set_volume(n.vault,
                                         download_rate=str(4 * MiB))
        url = 'sqlite:///%s/logbook-power-seed.sqlite' % labkit.state_path()
        orch = flows.Orchestrator(self.engine, url)
        device = orch.attach(vol.id)
        labkit.set_recovery_timeout(protocol.origin_iqn(n.name), 600)
        w = self.writer(device, seed=14)
        runner, thread = self.running_agent(orch)  # it seeds the disk
        self.cut_vault_during('zfs send .*' + n.vault, 'seed stream')
        time.sleep(5)
        labkit.power('vault', True)
        labkit.vault_back()
        self.wait_for(lambda: self.engine.state(vol.id) == 'local', 600,
                      'seed and cut-over after the power came back')
        w.wait_writes(w.writes + 50, timeout=120)  # the VM writes on
        w.stop()
        runner.stop()
        thread.join(300)
        orch.detach(vol.id)
        self.assertEqual([], self.vault_verify(vol, w))
        self.assertEqual([], labkit.sessions())

    def test_vault_power_cut_during_sync(self):
        """The VM writes on; the agent syncs by itself once it is back.

        The VM runs on its local replica, so its writes go on while the
        vault is off; the cut sync fails and ``zfs-vault list`` (what this
        host knows) shows the unsynced bytes; once the vault has booted
        again the running agent syncs by itself, and every acknowledged
        write reaches the vault.
        """
        # A failed sync is tried again after min(frequency, RETRY_AFTER).
        self.useFixture(fixtures.MockPatchObject(schedlib, 'RETRY_AFTER',
                                                 10))
        vol = self.disk()
        n = self.engine.names(vol.id)
        self.vault.attributes.set_volume(n.vault, frequency='60')
        url = 'sqlite:///%s/logbook-power.sqlite' % labkit.state_path()
        orch = flows.Orchestrator(self.engine, url)
        device = orch.attach(vol.id)
        orch.seed(vol.id)
        seeded = self.vault.leases.get(n.vault).synced_guid
        bulk = os.urandom(BULK)
        labkit.write_at(device, 192 * MiB, bulk)
        w = self.writer(device, seed=12)
        runner, thread = self.running_agent(orch)
        # The agent's first sync is due at once: cut while it streams.
        self.cut_vault_during('zfs (recv|receive) .*' + n.vault,
                              'sync stream')
        w.wait_writes(w.writes + 100, timeout=60)  # the VM writes on
        labkit.power('vault', True)
        # The cut stream fails (ssh's keepalives, or the rebooted vault's
        # reset) while the vault boots.
        self.wait_for(lambda: getattr(runner.scheduler.last(vol.id),
                                      'error', None) is not None, 300,
                      'failed sync')
        # What this host lists: served here (its retry may be under way),
        # the seed still the last sync point the vault confirmed.
        row, = status.local_statuses(self.engine, orch.in_flight, 'off')
        self.assertIn(row.state, ('local', 'syncing'))
        self.assertEqual(seeded, row.synced_guid)
        self.assertGreaterEqual(row.unsynced_bytes, BULK)
        labkit.vault_back()
        self.wait_for(lambda: self.vault.leases.get(n.vault).synced_guid
                      != seeded, 600, 'sync after the power came back')
        w.stop()
        runner.stop()
        thread.join(300)
        self.assertIsNone(runner.scheduler.last(vol.id).error)
        orch.detach(vol.id)
        self.assertEqual([], self.vault_verify(vol, w))
        self.assertEqual(labkit.digest(bulk), self.vault_lab.digest(
            self.zvol(vol), 192 * MiB, BULK))
