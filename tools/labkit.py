"""What the functional tests, the demo and the benchmarks share in the lab.

Runs inside the lab guests (``tools/zfs-lab exec``) as root, with LIO and
iscsid ready. Alone, one guest holds both pools, ``vault`` and ``compute``.
In a lab of hosts (``--hosts vault,compute-1,...``; ZFS_LAB_HOST names this
one) the tests run on compute-1: the replica engine there reaches the vault
only through ``zfs-vault-endpoint`` over SSH with its own restricted key,
and what the tests themselves do on the vault goes through the lab's vault
service (tools/vault_service.py). It drives the real driver with Cinder's
own configuration, and attaches volumes with os-brick's iSCSI connector
exactly as nova would.
"""

import contextlib
import functools
import glob
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from oslo_config import cfg

from cinder_zfs_vault.compute_host import agent
from cinder_zfs_vault import opts

CONF = cfg.CONF
#: This guest's name in a lab of hosts ('vault', 'compute-1', ...), or
#: the single guest's ('zfslab').
HOST = os.environ.get('ZFS_LAB_HOST') or socket.gethostname()
MULTI = HOST == 'vault' or HOST.startswith('compute-')
#: The vault's address: its private one in a lab of hosts.
VAULT_ADDR = '192.0.2.10' if MULTI else '127.0.0.1'
PORTAL_IP = VAULT_ADDR
#: The vault is another guest: reach it through its services.
REMOTE_VAULT = MULTI and HOST != 'vault'
RUN_DIR = '/zfs-lab-run'
_STATE = {}


def run(*argv, check=True, input=None, timeout=900):
    """Run a command; return stdout (text).

    :raises CalledProcessError: it failed. :raises TimeoutExpired: it ran
        longer than ``timeout`` seconds (killed).
    """
    result = subprocess.run([str(a) for a in argv], input=input,
                            capture_output=True, text=input is None or
                            isinstance(input, str), check=False,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, argv,
                                            result.stdout, result.stderr)
    return result.stdout


LOCK_PATH = os.path.join(tempfile.gettempdir(), 'zfs-vault-lab-locks')


def state_path():
    setup(cinder=False)
    return _STATE['state']


def resume_token_of(dataset):
    """The receive_resume_token of a dataset, or None."""
    value = run('zfs', 'get', '-Hp', '-o', 'value', 'receive_resume_token',
                dataset).strip()
    return None if value in ('', '-') else value


def setup(cinder=True):
    """Configure oslo and os-brick once per process (idempotent).

    :param cinder: also Cinder's objects, privsep and an admin context
        (what the driver and its fake volumes need). Importing Cinder
        takes ~25 s in a TCG guest (measured 2026-11-30), so what runs
        only the replica engine (make_engine, hence tools/flow_child.py)
        passes False.
    :returns: the admin context, or None without ``cinder``.
    """
    add_cinder = cinder and 'ctx' not in _STATE
    if add_cinder:
        if _STATE:
            # Cinder registers command-line options when imported, which
            # oslo.config refuses once it has parsed.
            raise RuntimeError('labkit.setup(): Cinder is needed after a '
                               'setup without it; set it up first')
        _import_cinder()
    if not _STATE:
        _setup_oslo()
    if add_cinder:
        _setup_cinder()
    return _STATE.get('ctx')


def _setup_oslo():
    patcher = sys.modules.get('eventlet.patcher')
    if patcher and patcher.is_monkey_patched('thread'):
        # See _db_row: the lab runs the engine as the agent does.
        raise RuntimeError('the lab needs native threads; something '
                           'monkey-patched this process with eventlet')
    # ZFS_LAB_STATE: a state directory the processes of a host share (an
    # agent and the flows a test runs there over ssh).
    state = (os.environ.get('ZFS_LAB_STATE')
             or tempfile.mkdtemp(prefix='zfs-vault-lab-'))
    os.makedirs(state, exist_ok=True)
    from oslo_concurrency import lockutils  # noqa: F401 (its lock_path)
    CONF([], project='cinder', default_config_files=[])
    # One lock directory for every process in the guest: the kill tests'
    # child and the test share the lease and flow locks.
    CONF.set_override('lock_path', LOCK_PATH, group='oslo_concurrency')
    # We are root in the lab: run os-brick's privileged calls in-process
    # instead of through sudo + privsep-helper.
    from os_brick import privileged
    privileged.default.set_client_mode(False)
    # So the driver's own lease changes (cinder-volume runs them in its
    # privsep daemon: tools/lab_cinder.py).
    from cinder_zfs_vault.vault_host import privileged as vault_privileged
    vault_privileged.vault_pctxt.set_client_mode(False)
    import os_brick
    os_brick.setup(CONF)
    # os-brick warns about NVMe and iSCSI bits this lab does not have.
    logging.getLogger('os_brick').setLevel(logging.ERROR)
    _STATE['state'] = state


def _import_cinder():
    """What the driver's side uses of Cinder, before oslo.config parses."""
    from cinder import objects
    from cinder.volume import configuration  # noqa: F401
    from cinder.volume import driver  # noqa: F401

    from cinder_zfs_vault import driver as zfs_driver  # noqa: F401
    objects.register_all()


def _setup_cinder():
    from cinder import context as cinder_context
    import cinder.privsep
    state = _STATE['state']
    CONF.set_override('state_path', state)
    conversion = '/var/lib/cinder/conversion'  # made by tools/lab/guest-init
    CONF.set_override('image_conversion_dir', conversion
                      if os.path.isdir(conversion)
                      else os.path.join(state, 'conv'))
    # As os-brick's: in-process, we are root.
    cinder.privsep.sys_admin_pctxt.set_client_mode(False)
    _STATE['ctx'] = cinder_context.get_admin_context()


def make_driver(backend='lab', **overrides):
    """A set-up ZFSVaultDriver for ``backend`` with option overrides."""
    from cinder.volume import configuration
    from cinder.volume import driver as cinder_driver

    from cinder_zfs_vault import driver as zfs_driver
    setup()
    conf = configuration.Configuration(
        cinder_driver.volume_opts + cinder_driver.iser_opts
        + opts.zfs_vault_opts, config_group=backend)
    values = {'target_ip_address': PORTAL_IP,
              'volumes_dir': os.path.join(_STATE['state'], 'tgt-volumes')}
    values.update(overrides)
    for name, value in values.items():
        CONF.set_override(name, value, group=backend)
    drv = zfs_driver.ZFSVaultDriver(configuration=conf)
    drv.do_setup(_STATE['ctx'])
    drv.check_for_setup_error()
    return drv


def new_volume(size=1, **kwargs):
    """A Cinder fake Volume object (no database) with a fresh id."""
    from cinder import objects
    ctx = setup()
    kwargs.setdefault('id', str(uuid.uuid4()))
    row = _db_row(objects.Volume, size=size, status='available',
                  attach_status='detached', volume_attachment=[],
                  volume_metadata=[], volume_admin_metadata=[],
                  volume_glance_metadata=[], snapshots=[], **kwargs)
    vol = objects.Volume._from_db_object(
        ctx, objects.Volume(), row,
        expected_attrs=['metadata', 'admin_metadata', 'volume_attachment'])
    vol.volume_type = objects.VolumeType._from_db_object(
        ctx, objects.VolumeType(),
        _db_row(objects.VolumeType, id=str(uuid.uuid4()), name='lab',
                is_public=True, projects=[], extra_specs={}))
    vol.glance_metadata = {}  # what the database would lazy-load
    return vol


def new_snapshot(volume):
    from cinder import objects
    ctx = setup()
    row = _db_row(objects.Snapshot, id=str(uuid.uuid4()),
                  volume_id=volume.id, volume_size=volume.size,
                  status='creating', progress='0%', metadata={},
                  snapshot_metadata=[], volume=volume)
    return objects.Snapshot._from_db_object(
        ctx, objects.Snapshot(), row, expected_attrs=['volume'])


def _db_row(cls, **values):
    """A database row of ``cls``: every other field null or its default.

    Built here rather than with cinder.tests.unit's fakes: importing that
    package monkey-patches the process with eventlet, and the engine runs
    with native threads (the agent, the CLI). Under eventlet a writer
    thread blocked on a suspended dm device stops the whole process, and
    eventlet's green os.write retries EPIPE forever.
    """
    from oslo_versionedobjects import fields as ovo_fields
    row = {}
    for name, field in cls.fields.items():
        if field.nullable:
            row[name] = None
        elif field.default != ovo_fields.UnspecifiedDefault:
            row[name] = field.default
    row.update(values)
    return row


def connector_properties(host=None):
    """This host's os-brick connector, as nova sends it to Cinder.

    :param host: its ``host`` (nova's ``[DEFAULT] host``); the host name
        by default, as os-brick's.
    """
    from os_brick.initiator import connector
    return connector.get_connector_properties(None, PORTAL_IP, False, False,
                                              host=host)


def iscsi_connector():
    from os_brick.initiator import connector
    return connector.InitiatorConnector.factory(
        'ISCSI', None, use_multipath=False, device_scan_attempts=10)


@contextlib.contextmanager
def attached(drv, volume, connection_override=None):
    """Export, allow and log in to ``volume`` with os-brick.

    Yields the local block device; logs out, revokes and unexports on the
    way out.
    """
    ctx = setup()
    update = drv.create_export(ctx, volume, None)
    volume.update(update)
    props = connector_properties()
    brick = iscsi_connector()
    info = None
    device = None
    try:
        info = drv.initialize_connection(volume, props)
        data = dict(info['data'], **(connection_override or {}))
        device = brick.connect_volume(data)
        yield device['path']
    finally:
        if device is not None:
            brick.disconnect_volume(data, device, force=True)
        if info is not None:
            drv.terminate_connection(volume, props)
        drv.remove_export(ctx, volume)


@contextlib.contextmanager
def attached_to(vault_side, volume_id):
    """Attach a vault volume to this host as nova does, across hosts.

    The vault side (cinder-volume's driver: vault_lab()) exports it and
    allows this host's connector; os-brick logs in here. Yields the block
    device; logs out, revokes and unexports on the way out.
    """
    props = connector_properties()
    data = vault_side.initialize(volume_id, props)
    brick = iscsi_connector()
    device = brick.connect_volume(data)
    try:
        yield device['path']
    finally:
        brick.disconnect_volume(data, device, force=True)
        vault_side.terminate(volume_id, props)


def run_all(target, args_list, timeout):
    """Run ``target(*args)`` for each args in threads at once; join all."""
    threads = [threading.Thread(target=target, args=args)
               for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


def pattern(seed, size):
    """``size`` bytes that depend on ``seed`` (a verifiable pattern)."""
    block = (('%s|' % seed) * 64).encode()[:4096].ljust(4096, b'.')
    return (block * (size // 4096 + 1))[:size]


def digest(data):
    """SHA-256 of ``data`` (hex): compare big blocks across hosts."""
    import hashlib
    return hashlib.sha256(data).hexdigest()


def write_at(device, offset, data):
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_at(device, offset, size):
    with open(device, 'rb', buffering=0) as f:
        f.seek(offset)
        return f.read(size)


def wait_for(path, timeout=30):
    """Wait for a device node (udev links appear asynchronously)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError('%s did not appear in %ss' % (path, timeout))
        run('udevadm', 'settle', '-t', '5', check=False)
        time.sleep(0.2)
    return path


def zvols(root='vault'):
    """Every dataset and snapshot under ``root`` (names)."""
    out = run('zfs', 'list', '-H', '-o', 'name', '-t', 'all', '-r', root)
    return sorted(set(out.split()) - {root})


def targets():
    """IQNs of LIO targets, read from configfs (what rtstool lists)."""
    path = '/sys/kernel/config/target/iscsi'
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if n.startswith('iqn.'))


def sessions():
    """iSCSI sessions of this initiator ('iscsiadm -m session')."""
    result = subprocess.run(['iscsiadm', '-m', 'session'],
                            capture_output=True, text=True)
    return [] if result.returncode == 21 else result.stdout.split('\n')[:-1]


def set_recovery_timeout(iqn, seconds):
    """Set how long this initiator's session to ``iqn`` retries (seconds).

    The live session's ``recovery_tmo`` (open-iscsi's
    ``node.session.timeo.replacement_timeout``, 120 s by default): after
    it, I/O queued on a lost session fails instead of waiting.
    """
    for path in glob.glob('/sys/class/iscsi_session/session*'):
        with open(os.path.join(path, 'targetname')) as f:
            if f.read().strip() != iqn:
                continue
        with open(os.path.join(path, 'recovery_tmo'), 'w') as f:
            f.write(str(seconds))
        return
    raise AssertionError('no iSCSI session to %s' % iqn)


def leftovers(root='vault'):
    """What a test or the demo could have leaked, on every host."""
    if REMOTE_VAULT:
        vault_side = vault_lab().leftovers()
    else:
        vault_side = {'zvols': zvols(root), 'targets': targets()}
    return dict(vault_side, sessions=sessions(), compute=zvols('compute'),
                dm=dm_devices())


# -- a lab of hosts -----------------------------------------------------------

def lab_hosts():
    """The guests of this lab of hosts (the kernel's ``zfslab.hosts=``)."""
    with open('/proc/cmdline') as f:
        match = re.search(r'zfslab\.hosts=(\S+)', f.read())
    return match.group(1).split(',') if match else []


#: The lab run of the faults (power cuts, a network cut in steady state)
#: boots compute-2; tools/run-tests' lab of hosts does not (its budget).
FAULT_LAB = 'compute-2' in lab_hosts()


def on_host(host, *argv, check=True, timeout=900):
    """Run ``argv`` on another guest as root (the lab's SSH); its stdout."""
    return run('ssh', host, '--', shlex.join(str(a) for a in argv),
               check=check, timeout=timeout)


def lab_authkey():
    """The run's secret, which only the lab's guests see."""
    with open(os.path.join(RUN_DIR, 'lab_key'), 'rb') as f:
        return f.read()


class Remote(object):
    """Calls of an object on the vault guest (tools/vault_service.py)."""

    def __init__(self, link, path):
        self._link = link
        self._path = path

    def __getattr__(self, name):
        return Remote(self._link, self._path + '.' + name)

    def __call__(self, *args, **kwargs):
        with self._link.lock:
            self._link.conn.send((self._path, args, kwargs))
            status, value = self._link.conn.recv()
        if status == 'error':
            raise value
        return value


class _ServiceLink(object):
    """The connection to the vault service, made again after a power cut."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conn = self._connect()

    @staticmethod
    def _connect():
        """A connection to the vault service, started on first use."""
        from multiprocessing import connection

        from tools import vault_service
        address = (VAULT_ADDR, vault_service.PORT)
        for attempt in range(240):
            try:
                return connection.Client(address, authkey=lab_authkey())
            except OSError:
                if attempt == 0:
                    tree = os.getcwd()
                    on_host('vault', 'sh', '-c', (
                        'cd %s && PYTHONPATH=%s setsid nohup %s -m '
                        'tools.vault_service > /var/log/vault_service.log '
                        '2>&1 < /dev/null &') % (tree, tree, sys.executable))
                time.sleep(0.5)
        raise TimeoutError('the vault service did not start: see '
                           '/var/log/vault_service.log on the vault')

    def reconnect(self):
        with self.lock:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = self._connect()


@functools.lru_cache(maxsize=None)
def _vault_service():
    """The :class:`_ServiceLink` every Remote of this process shares."""
    return _ServiceLink()


def vault_lab():
    """The tests' hands on the vault host (vault_service.VaultLab)."""
    if REMOTE_VAULT:
        return Remote(_vault_service(), 'lab')
    from tools import vault_service
    if 'vault_lab' not in _STATE:
        _STATE['vault_lab'] = vault_service.VaultLab()
    return _STATE['vault_lab']


ENDPOINT_CONF = '/etc/cinder-zfs-vault/endpoint.conf'
ENDPOINT_SOCKET = '/run/zfs-vault/endpoint.sock'
ENDPOINT_LOG = '/var/log/zfs-vault-endpoint-server.log'


def write_endpoint_conf(path=ENDPOINT_CONF):
    """The vault endpoint's configuration on this (vault) host."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('[zfs_vault_endpoint]\nvault_dataset = vault\n'
                'portal_ip = %s\nstate_path = %s\nsocket_path = %s\n'
                % (VAULT_ADDR, VAULT_STATE, ENDPOINT_SOCKET))


def _answering(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def ensure_endpoint_server(timeout=180):
    """Start ``zfs-vault-endpoint-server`` on this (vault) host if needed.

    As its systemd unit would, in the background, logging to
    :data:`ENDPOINT_LOG`.
    """
    if _answering(ENDPOINT_SOCKET):
        return
    write_endpoint_conf()
    with open(ENDPOINT_LOG, 'a') as log:
        subprocess.Popen([sys.executable, '-m',
                          'cinder_zfs_vault.cmd.endpoint_server',
                          '--config-file', ENDPOINT_CONF],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _answering(ENDPOINT_SOCKET):
        if time.monotonic() > deadline:
            raise TimeoutError('zfs-vault-endpoint-server did not start: '
                               'see ' + ENDPOINT_LOG)
        time.sleep(0.2)


def initiator():
    """This host's iSCSI initiator name (what os-brick logs in with)."""
    with open('/etc/iscsi/initiatorname.iscsi') as f:
        for line in f:
            if line.startswith('InitiatorName='):
                return line.split('=', 1)[1].strip()


KNOWN_HOSTS = '/root/.ssh/known_hosts'  # made by the lab from each guest


@functools.lru_cache(maxsize=None)
def endpoint_key(host=None):
    """This guest's restricted key for the vault endpoint, as ``host``.

    Made once, and the vault told to let it run the endpoint as ``host``
    with this guest's initiator (and nothing else).
    """
    key = '/root/.ssh/zfs-vault-' + (host or HOST)
    if not os.path.exists(key):
        run('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key)
    with open(key + '.pub') as f:
        vault_lab().install_endpoint_key(host or HOST, initiator(), f.read())
    return key


def endpoint_client(host=None):
    """A VaultClient of this guest over SSH, with its restricted key.

    Built as the agent builds it (compute_host/agent.py).
    """
    from cinder_zfs_vault.compute_host import agent
    conf = engine_conf(host or HOST)
    return agent.make_vault_client(conf, initiator())


def agent_conf_text(host, state):
    """``[zfs_vault_agent]`` of ``host`` as an operator writes it."""
    text = ('[zfs_vault_agent]\nhost = %s\nvault_dataset = vault\n'
            'compute_dataset = compute\nportal_ip = %s\nstate_path = %s\n'
            % (host, PORTAL_IP, state))
    if REMOTE_VAULT:
        text += ('zfs_vault_ssh_host = vault\n'
                 'zfs_vault_ssh_private_key = %s\n'
                 'zfs_vault_ssh_known_hosts = %s\n'
                 % (endpoint_key(host), KNOWN_HOSTS))
    return text


AGENT_CONF = '/etc/cinder-zfs-vault/agent.conf'
AGENT_LOG = '/var/log/zfs-vault-agent.log'
#: The agent service's state: not the tests' own engines' (state_path).
AGENT_STATE = '/var/lib/zfs-vault-agent'


def start_agent(transport_url, timeout=120):
    """Run ``zfs-vault-agent`` on this host as its service would.

    Its configuration is :data:`AGENT_CONF` (``[DEFAULT] transport_url``
    and ``[zfs_vault_agent]`` as an operator writes them), its output goes
    to :data:`AGENT_LOG`. Returns the process once the agent answers a
    ping over RPC. :raises TimeoutError: not in ``timeout`` seconds.
    """
    from cinder_zfs_vault import rpc
    from cinder_zfs_vault.vault_host import agents
    os.makedirs(os.path.dirname(AGENT_CONF), exist_ok=True)
    with open(AGENT_CONF, 'w') as f:
        f.write('[DEFAULT]\ntransport_url = %s\n\n' % transport_url +
                agent_conf_text(ENGINE_HOST, AGENT_STATE))
    with open(AGENT_LOG, 'a') as out:
        proc = subprocess.Popen(
            # The console script zfs-vault-agent, from the shared tree.
            [sys.executable, '-m', 'cinder_zfs_vault.cmd.agent',
             '--config-file', AGENT_CONF, '--tick', '2'],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True)
    # The global CONF: oslo.messaging registers some options there only.
    rpc.transport(CONF)  # registers transport_url
    CONF.set_override('transport_url', transport_url)
    calls = agents.Agents(rpc.transport(CONF), ping_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while not calls.alive(ENGINE_HOST):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_agent(proc)
                raise TimeoutError('zfs-vault-agent did not answer in %d s: '
                                   'see %s' % (timeout, AGENT_LOG))
    finally:
        calls.transport.cleanup()
    return proc


def stop_agent(proc, timeout=300):
    """SIGTERM (its calls and syncs finish), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(60)


def agent_log(tail=200):
    try:
        with open(AGENT_LOG, errors='replace') as f:
            return ''.join(f.readlines()[-tail:])
    except OSError:
        return ''


def clear_lio():
    """Drop the running LIO configuration, as a reboot of the vault would.

    The saved configuration in /etc/target stays.
    """
    run('python3', '-c', 'import rtslib_fb; '
        'rtslib_fb.RTSRoot().clear_existing(confirm=True)')


class LocalImageService(object):
    """An image service holding images as files.

    It answers the calls Cinder's image_utils makes on Glance (show,
    download, update).
    """

    temp_images = None  # image_utils.TemporaryImages keeps its cache here

    def __init__(self, directory=None):
        self.directory = directory or tempfile.mkdtemp(prefix='images-')
        self.meta = {}

    def add(self, path, disk_format='raw', copy=True):
        """Register an image; ``copy=False`` serves the file in place."""
        image_id = str(uuid.uuid4())
        dest = os.path.join(self.directory, image_id)
        if copy:
            shutil.copyfile(path, dest)
        else:
            os.symlink(path, dest)
        self.meta[image_id] = {'id': image_id, 'disk_format': disk_format,
                               'container_format': 'bare', 'status': 'active',
                               'size': os.path.getsize(dest), 'properties': {}}
        return image_id

    def create_placeholder(self, disk_format='raw'):
        image_id = str(uuid.uuid4())
        self.meta[image_id] = {'id': image_id, 'disk_format': disk_format,
                               'container_format': 'bare', 'status': 'queued',
                               'size': 0, 'properties': {}}
        return self.meta[image_id]

    def path(self, image_id):
        return os.path.join(self.directory, image_id)

    def show(self, context, image_id):
        return dict(self.meta[image_id])

    def download(self, context, image_id, data=None):
        with open(self.path(image_id), 'rb') as src:
            shutil.copyfileobj(src, data, 4 * 1024 * 1024)

    def update(self, context, image_id, meta, data=None, **kwargs):
        with open(self.path(image_id), 'wb') as dest:
            shutil.copyfileobj(data, dest, 4 * 1024 * 1024)
        self.meta[image_id].update(status='active',
                                   size=os.path.getsize(self.path(image_id)))
        return self.meta[image_id]


def dumps(obj):
    return json.dumps(obj, indent=1, sort_keys=True)


#: The engine's host name: this guest's in a lab of hosts.
ENGINE_HOST = HOST if HOST.startswith('compute-') else 'compute-1'
#: The compute hosts of a lab (of hosts): an operator grants them the
#: volumes the replica tests attach (``zfs-vault grant``), as cinder-volume
#: grants a volume to the host Cinder attaches it to.
COMPUTE_HOSTS = ('compute-1', 'compute-2')


def engine_conf(host=None, vault_root='vault', compute_root='compute',
                state=None):
    """``[zfs_vault_agent]`` options of this lab host (a new ConfigOpts)."""
    host = host or ENGINE_HOST
    conf = cfg.ConfigOpts()
    agent.register_opts(conf)
    conf([], default_config_files=[])
    values = {'host': host, 'vault_dataset': vault_root,
              'compute_dataset': compute_root, 'portal_ip': PORTAL_IP,
              'state_path': state or state_path()}
    if REMOTE_VAULT:
        values.update(zfs_vault_ssh_host='vault',
                      zfs_vault_ssh_private_key=endpoint_key(host),
                      zfs_vault_ssh_known_hosts=KNOWN_HOSTS)
    for name, value in values.items():
        conf.set_override(name, value, group='zfs_vault_agent')
    return conf


#: Where the vault endpoint keeps its state when no configuration names
#: one (the option's default): the lease locks it shares with vault().
VAULT_STATE = '/var/lib/zfs-vault'


def vault(vault_root='vault'):
    """The vault's Authority, as the operator (or the driver) has it.

    It shares its lease locks and landing records with the endpoint
    processes the engines ask (the default state path). On a compute
    guest of a lab of hosts, the one on the vault guest (Remote).
    """
    if REMOTE_VAULT:
        return Remote(_vault_service(), 'authority')
    from cinder_zfs_vault import executor
    from cinder_zfs_vault.vault_host import authority
    from cinder_zfs_vault.vault_host import origin
    from cinder_zfs_vault import zfs
    return authority.Authority(zfs.ZFS(executor.LocalExecutor()),
                               origin.OriginExporter(PORTAL_IP), vault_root,
                               VAULT_STATE)


def make_engine(host=None, vault_root='vault',
                compute_root='compute', notify=None, vault=None,
                quiesce=False, **settings):
    """A ReplicaEngine for this lab host: vault and compute pools local.

    Built by the agent's factory from ``[zfs_vault_agent]`` options; the
    vault is reached through its endpoint, run as a local process that
    names ``host``.

    :param vault: a VaultClient (default: the local endpoint).
    :param quiesce: hold the lab's writers (our stand-in VMs) on a device
        around its table swaps (the engine's optional hook). By default
        they write on and dm queues their writes while suspended.
    """
    from cinder_zfs_vault.compute_host import replica
    setup(cinder=False)
    if not REMOTE_VAULT:
        ensure_endpoint_server()
    return agent.make_engine(engine_conf(host, vault_root, compute_root),
                             replica.DEFAULTS._replace(**settings),
                             notify=notify, vault=vault,
                             quiesce=quiesce_writers if quiesce else None)


#: Running VerifyingWriters by device (the lab's VMs).
_WRITERS = {}


@contextlib.contextmanager
def quiesce_writers(volume_id):
    """Hold every writer on the volume's device, nothing in flight."""
    held = [w for w in list(_WRITERS.values())
            if w.device == '/dev/mapper/zvault-' + volume_id]
    for w in held:
        w.hold()
    try:
        yield
    finally:
        for w in held:
            w.release()


def dm_devices():
    out = run('dmsetup', 'ls')
    return sorted(line.split()[0] for line in out.splitlines()
                  if line and not line.startswith('No devices'))


class VerifyingWriter(object):
    """Writes numbered 4 KiB blocks to a device from a thread.

    With O_DIRECT, so every acknowledged write is on the device; it
    remembers the last sequence number it wrote to each block, and
    :meth:`verify` checks a copy (the vault zvol) against every write.

    :param device: block device to write.
    :param blocks: how many 4 KiB blocks to use, from block ``first``.
    :param rate: writes per second (None: as fast as it can).
    :param durable: O_DSYNC too, so that an acknowledged write survives a
        power cut (a VM's flush; O_DIRECT alone may leave it in a volatile
        cache: the zvol's open transaction group).
    :param on_ack: callable(index, seq) after each acknowledged write.
    """

    BLOCK = 4096

    def __init__(self, device, blocks=16384, rate=200, seed=1, first=0,
                 durable=False, on_ack=None):
        import random
        import threading
        self.device = device
        self.blocks = blocks
        self.first = first
        self.rate = rate
        self.last = {}
        self.writes = 0
        self.latencies = []
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Held like a paused VM: no new write starts, none is in flight.
        # Holds nest (a test and an engine may both hold).
        self._cond = threading.Condition()
        self._holds = 0
        self.held = 0  # times held, for the tests of the quiesce hook
        self._in_flight = False
        self.error = None
        self._flags = os.O_WRONLY | os.O_DIRECT | (os.O_DSYNC if durable
                                                   else 0)
        self._on_ack = on_ack or (lambda index, seq: None)

    def start(self):
        _WRITERS[id(self)] = self
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(60)
        _WRITERS.pop(id(self), None)
        if self.error:
            raise self.error

    def hold(self):
        """Wait for the write in flight; start no other until release."""
        with self._cond:
            self._holds += 1
            self.held += 1
            if not self._cond.wait_for(lambda: not self._in_flight, 120):
                raise AssertionError('a write stayed in flight for 120 s')

    def release(self):
        with self._cond:
            self._holds -= 1
            self._cond.notify_all()

    @classmethod
    def block(cls, index, seq):
        head = ('zfs-vault block %d seq %d|' % (index, seq)).encode()
        return (head * (cls.BLOCK // len(head) + 1))[:cls.BLOCK]

    def _run(self):
        import mmap
        buf = mmap.mmap(-1, self.BLOCK)  # page aligned, as O_DIRECT wants
        fd = os.open(self.device, self._flags)
        try:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                index = self.first + self._random.randrange(self.blocks)
                buf.seek(0)
                buf.write(self.block(index, seq))
                start = time.monotonic()
                with self._cond:
                    self._cond.wait_for(lambda: not self._holds
                                        or self._stop.is_set())
                    if self._stop.is_set():
                        break
                    self._in_flight = True
                try:
                    os.pwrite(fd, buf, index * self.BLOCK)
                finally:
                    with self._cond:
                        self._in_flight = False
                        self._cond.notify_all()
                self.latencies.append(time.monotonic() - start)
                self.last[index] = seq
                self.writes += 1
                self._on_ack(index, seq)
                if self.rate:
                    time.sleep(1.0 / self.rate)
        except Exception as e:  # reported by stop()
            self.error = e
        finally:
            os.close(fd)
            buf.close()

    def wait_writes(self, count, timeout):
        """Wait until ``count`` writes are acknowledged (or fail)."""
        deadline = time.monotonic() + timeout
        while self.writes < count:
            if self.error:
                raise self.error
            if time.monotonic() > deadline:
                raise AssertionError('%d of %d writes in %ss'
                                     % (self.writes, count, timeout))
            time.sleep(0.05)

    def verify(self, path, at_least=False):
        """Blocks of ``path`` that differ from the last write: [] is good.

        :param at_least: a block may hold a later write than the last one
            known here (its acknowledgement lost with a powered-off host):
            any write of the block with a sequence number no lower.
        """
        bad = []
        with open(path, 'rb', buffering=0) as f:
            for index, seq in sorted(self.last.items()):
                f.seek(index * self.BLOCK)
                data = f.read(self.BLOCK)
                if data == self.block(index, seq):
                    continue
                if at_least and self._later(data, index, seq):
                    continue
                bad.append(index)
        return bad

    @classmethod
    def _later(cls, data, index, seq):
        match = re.match(rb'zfs-vault block (\d+) seq (\d+)\|', data)
        return bool(match and int(match.group(1)) == index
                    and int(match.group(2)) > seq
                    and data == cls.block(index, int(match.group(2))))

    def max_latency(self):
        return max(self.latencies) if self.latencies else 0.0


def _fault(line, timeout):
    """Ask the lab's host for a fault (tools/zfs-lab ``serve_faults``).

    :returns: what the host said. :raises RuntimeError: it refused or
        failed; TimeoutError: no answer within ``timeout`` seconds.
    """
    faults = os.path.join(RUN_DIR, 'faults')
    os.makedirs(faults, exist_ok=True)
    req = os.path.join(faults, uuid.uuid4().hex)
    with open(req + '.tmp', 'w') as f:
        f.write(line + '\n')
    os.rename(req + '.tmp', req + '.req')
    deadline = time.monotonic() + timeout
    while not os.path.exists(req + '.done'):
        if time.monotonic() > deadline:
            raise TimeoutError('the lab host did not do: ' + line)
        time.sleep(0.2)
    with open(req + '.out') as f:
        said = f.read()
    if 'refused' in said or 'Error' in said or 'not found' in said:
        raise RuntimeError('%s: %s' % (line, said))
    return said


def set_link(host, up, timeout=60):
    """Cut (``up=False``) or restore the link between ``host`` and the vault.

    The lab's host sets the link of both guests' NICs through their QEMU
    monitors: packets are dropped, as with a pulled cable; connections are
    not reset.
    """
    _fault('link %s %s' % (host, 'on' if up else 'off'), timeout)


def power(host, on, timeout=60):
    """Cut ``host``'s power (``on=False``), or power it on again.

    ``host`` is the vault or compute-N with N > 1 (compute-1 runs the
    tests). Off: its QEMU stops where it is (no shutdown). On: it boots
    again with its pool and root disk as the cut left them;
    :func:`host_back` waits for it. Powering on a running host does
    nothing.
    """
    _fault('power %s %s' % (host, 'on' if on else 'off'), timeout)


def host_back(host, timeout=600):
    """Wait until ``host``, powered on again, is ready (its boot is done)."""
    ready = os.path.join(RUN_DIR, 'hosts', host, 'ready')
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready):
        if time.monotonic() > deadline:
            raise TimeoutError('%s did not boot in %ds' % (host, timeout))
        time.sleep(1)


def vault_back(timeout=600):
    """Wait for the vault guest powered on again, then reconnect to it.

    Its boot has imported the pool and started sshd (tools/lab/guest-init);
    the endpoint server starts as its systemd unit would at boot, and the
    vault service's connection is made again (every Remote shares it).
    """
    host_back('vault', timeout)
    _vault_service().reconnect()
    vault_lab().start_services()
