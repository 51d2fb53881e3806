"""Run replica flows in a process the kill and power-cut tests can end.

``python -m tools.flow_child LOGBOOK_URL OP [OP...]``, each OP
``KIND:VOLUME_ID[:RATE[:STOP]]``: the OPs of one volume run in order, the
volumes' at once (one thread each, as the agent runs them). Every line
printed starts with the volume id: ``task <name> <state>`` per task
transition, ``progress <bytes>`` per MiB moved, ``step <name>`` per engine
step, ``finished`` when its OPs are done or ``failed <error>``. RATE
(bytes/s) throttles the OP's transfers; with STOP set to a step name
(``attach.cow``, ``cutover.suspended``) the flow waits there (for a
cut-over with the VM's I/O held) until the test kills the process or cuts
its host's power.
"""

import collections
import sys
import threading
import time
import traceback

from cinder_zfs_vault.compute_host import flows
from tools import labkit

_PRINT = threading.Lock()
# oslo.config's registrations and the logbook's first schema upgrade are
# not safe from two threads at once.
_MAKE = threading.Lock()


def say(*words):
    with _PRINT:
        print(*words, flush=True)


def run_ops(url, volume_id, ops):
    """The OPs of one volume, in order: [(kind, rate, stop)]."""
    try:
        for kind, rate, stop in ops:
            run_op(url, kind, volume_id, rate, stop)
        say(volume_id, 'finished')
    except Exception as e:
        traceback.print_exc()  # the whole error for the test's log
        say(volume_id, 'failed', str(e).replace('\n', ' '))


def run_op(url, kind, volume_id, rate, stop):
    def step(name):
        say(volume_id, 'step', name)
        if name == stop:
            time.sleep(600)

    reported = [0]

    def progress(done, expected):
        if done - reported[0] >= 1024 * 1024:
            reported[0] = done
            say(volume_id, 'progress', done)

    rate = int(rate) if rate else None
    with _MAKE:
        engine = labkit.make_engine(upload_rate=rate, download_rate=rate,
                                    notify=step)
        orch = flows.Orchestrator(engine, url, on_task=lambda name, state:
                                  say(volume_id, 'task', name, state))
    if kind == 'attach':
        orch.attach(volume_id)
    else:
        getattr(orch, kind)(volume_id, progress=progress)


def main(url, *ops):
    by_volume = collections.OrderedDict()
    for op in ops:
        kind, volume_id, rate, stop = (op.split(':') + ['', ''])[:4]
        by_volume.setdefault(volume_id, []).append((kind, rate, stop))
    threads = [threading.Thread(target=run_ops, args=(url, vid, vops))
               for vid, vops in by_volume.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == '__main__':
    main(*sys.argv[1:])
