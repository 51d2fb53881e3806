"""Run one replica flow in a process the kill tests can SIGKILL.

``python -m tools.flow_child LOGBOOK_URL KIND VOLUME_ID [RATE] [STOP]``
prints a line per task transition (``task <name> <state>``), per MiB moved
(``progress <bytes>``) and per engine step (``step <name>``). With STOP
set to a step name the engine waits there (I/O held, for a cut-over) until
the test kills it.
"""

import sys
import time

from cinder_zfs_vault.compute_host import flows
from tools import labkit


def main(url, kind, volume_id, rate='', stop=''):
    def say(*words):
        print(*words, flush=True)

    def step(name):
        say('step', name)
        if name == stop:
            time.sleep(600)

    reported = [0]

    def progress(done, expected):
        if done - reported[0] >= 1024 * 1024:
            reported[0] = done
            say('progress', done)

    rate = int(rate) if rate else None
    engine = labkit.make_engine(upload_rate=rate, download_rate=rate,
                                notify=step)
    orch = flows.Orchestrator(engine, url,
                              on_task=lambda name, state: say('task', name,
                                                              state))
    if kind == 'sync':
        orch.sync(volume_id, progress=progress)
    else:
        getattr(orch, kind)(volume_id, progress=progress)
    say('finished')


if __name__ == '__main__':
    main(*sys.argv[1:])
