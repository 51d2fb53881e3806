"""Run replica flows in a process the kill and power-cut tests can end.

``python -m tools.flow_child LOGBOOK_URL OP [OP...]``, each OP
``KIND:VOLUME_ID[:RATE[:STOP]]``: the OPs of one volume run in order, the
volumes' at once (one thread each, as the agent runs them). Every line
printed starts with the volume id: ``task <name> <state>`` per task
transition, ``progress <bytes>`` per MiB moved, ``step <name>`` per engine
step, ``finished`` when its OPs are done or ``failed <error>``. KIND
``write`` is the VM: a durable VerifyingWriter on the volume's device from
then on, printing ``ack <block> <seq>`` for each acknowledged write (the
power-cut tests keep them on another host); with RATE, that many writes
and the device closed before the next OP. RATE
(bytes/s) throttles the OP's transfers; with STOP set to a step name
(``attach.cow``, ``cutover.suspended``) the flow waits there (for a
cut-over with the VM's I/O held) until the test kills the process or cuts
its host's power.

``python -m tools.flow_child LOGBOOK_URL agent``: the host's agent
(service.Agent, tick 1 s) over that logbook until SIGTERM, as its unit
runs after a boot; ``... LOGBOOK_URL state VOLUME_ID`` prints the disk's
state here (status.State) and the flows in flight; ``... key`` makes this
host's endpoint key. KIND ``fill``: RATE bytes of a pattern written (and
fsynced) at 128 MiB; ``discard``: a fenced disk's leftovers go.
"""

import collections
import signal
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

    if kind == 'write':
        writer = labkit.VerifyingWriter(
            '/dev/mapper/zvault-' + volume_id, blocks=4096, durable=True,
            on_ack=lambda index, seq: say(volume_id, 'ack', index, seq)
        ).start()
        if rate:  # that many writes, then the VM is done with its device
            writer.wait_writes(int(rate), timeout=600)
            writer.stop()
        return
    if kind == 'fill':  # RATE bytes of labkit.pattern('fill') at 128 MiB
        labkit.write_at('/dev/mapper/zvault-' + volume_id, 128 << 20,
                        labkit.pattern('fill', int(rate)))
        return
    if kind == 'discard':  # a fenced disk's leftovers (a test's cleanup)
        return labkit.make_engine().discard_fenced(volume_id)
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


def run_agent(url):
    from cinder_zfs_vault.compute_host import service
    engine = labkit.make_engine()
    runner = service.Agent(flows.Orchestrator(engine, url), tick=1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop())
    runner.run()


def print_state(url, volume_id):
    orch = flows.Orchestrator(labkit.make_engine(), url)
    say('state', orch.replica.state(volume_id).value)
    say('in-flight', len(orch.in_flight()))


def main(url, *ops):
    if ops == ('agent',):
        return run_agent(url)
    if ops == ('key',):
        return labkit.endpoint_key()
    if ops[:1] == ('state',):
        return print_state(url, ops[1])
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
