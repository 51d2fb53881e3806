"""The compute host's replica agent: recover at start, then sync on schedule.

At start it resumes the flows a crash left in the logbook and reconciles
what exists with them (flows.Orchestrator.recover); then, every ``tick``
seconds, it watches the disks whose replica is on this host (a disk in
state 'local' is synced, one that went away is dropped) and lets the sync
scheduler (scheduler.py) run the due sync points through the orchestrator,
at most ``sync_workers`` at a time. ``zfs-vault-agent`` runs it
(cinder_zfs_vault/cmd/agent.py).
"""

import threading

from oslo_log import log as logging

from cinder_zfs_vault.compute_host import scheduler as schedlib
from cinder_zfs_vault import status

LOG = logging.getLogger(__name__)


class Agent(object):
    """Recovery and the sync schedule of one host's replicas.

    :param orchestrator: :class:`~.flows.Orchestrator`.
    :param scheduler: a :class:`~.scheduler.SyncScheduler`
        (default: one over the vault's attributes running the
        orchestrator's sync).
    :param tick: seconds between two looks at the schedule.
    """

    def __init__(self, orchestrator, scheduler=None, tick=10.0):
        self.orchestrator = orchestrator
        self.replica = orchestrator.replica
        self.scheduler = scheduler or schedlib.SyncScheduler(
            self.replica.attributes, run=orchestrator.sync)
        self.tick = tick
        self._stopped = threading.Event()

    def start(self):
        """Resume and reconcile; watch the replicas found.

        :returns: both reports of
            :meth:`~cinder_zfs_vault.compute_host.flows.Orchestrator.recover`.
        """
        report = self.orchestrator.recover()
        for line in report[0] + report[1]:
            LOG.info('recovery: %s', line)
        self.watch()
        return report

    def watch(self):
        """Sync the disks that are local here; forget those that left.

        :returns: the volume ids watched now.
        """
        local = [vid for vid in self.replica.found()
                 if self.replica.state(vid) == status.State.LOCAL]
        for vid in set(self.scheduler.status().get('watched', ())) - \
                set(local):
            self.scheduler.remove(vid)
        for vid in local:
            self.scheduler.add(vid)
        return local

    def run(self, close_timeout=600):
        """Start, then tick until :meth:`stop`; running syncs finish."""
        self.start()
        try:
            while not self._stopped.is_set():
                try:
                    self.watch()
                    self.scheduler.tick()
                except Exception:
                    # One bad look must not stop the schedule.
                    LOG.exception('agent tick failed')
                self._stopped.wait(self.tick)
        finally:
            self.scheduler.close(close_timeout)

    def stop(self):
        self._stopped.set()
