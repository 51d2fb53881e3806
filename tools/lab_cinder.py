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

"""Cinder's own services on the lab's vault guest, as an operator runs them.

RabbitMQ (Debian's ``rabbitmq-server``), then ``cinder-api``
(``auth_strategy = noauth``), ``cinder-scheduler`` and ``cinder-volume``
with this driver, from the console scripts of the Cinder package in the
lab's virtualenv. Their configuration is under ``/etc/cinder``; the
database is SQLite, Cinder's embedded default (``cinder-manage db sync``);
their logs are in :data:`LOG_DIR`, which a failed test shows.

The lab has no systemd: :func:`ensure` is what the units would do at boot,
called by the tests (as ``labkit.ensure_endpoint_server``). The services
run as the ``cinder`` user, as packaged Cinder runs them: root through
``sudo cinder-rootwrap /etc/cinder/rootwrap.conf`` only, with Cinder's
``volume.filters`` and this project's ``zfs-vault.filters`` (made for the
root ``vault``); the driver's lease changes in its privsep daemon, which
cinder-rootwrap starts (vault_host/privileged.py).
"""

import base64
import hashlib
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request

from cinder_zfs_vault.vault_host import rootwrap
from tools import labkit

CONF_DIR = '/etc/cinder'
CONF = os.path.join(CONF_DIR, 'cinder.conf')
#: Files of the Cinder package's etc/cinder that cinder-api reads from
#: CONF_DIR: its WSGI pipeline, and the list filters non-admin users may
#: send (``resource_query_filters_file``).
PACKAGE_CONF_FILES = ('api-paste.ini', 'resource_filters.json')
STATE = '/var/lib/cinder'
#: Cinder's services run as this user (its home: STATE).
USER = 'cinder'
ROOTWRAP_CONF = os.path.join(CONF_DIR, 'rootwrap.conf')
#: Where sudo finds cinder-rootwrap (its secure_path), as a package puts it.
ROOTWRAP_BIN = '/usr/local/bin/cinder-rootwrap'
SUDOERS = '/etc/sudoers.d/cinder'
TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_DIR = '/var/log/cinder'
RABBIT_CONF = '/etc/rabbitmq/rabbitmq.conf'
DATABASE = os.path.join(STATE, 'cinder.sqlite')
API_PORT = 8776
#: RabbitMQ's definitions (users, virtual hosts, permissions), loaded at
#: its boot.
RABBIT_DEFINITIONS = '/etc/rabbitmq/definitions.json'
#: The RabbitMQ account of Cinder's services, on Cinder's virtual host
#: ``/``; cinder-volume's driver also calls the agents with it, on theirs.
RABBIT_USER = 'zfsvault'
#: The compute hosts' agents: an account of their own that reaches only
#: their virtual host, never Cinder's (DESIGN.md, "The message bus is not
#: shared"; issue 21, 13).
AGENT_USER = 'zfs-vault-agent'
AGENT_VHOST = 'zfs-vault'
SERVICES = ('cinder-api', 'cinder-scheduler', 'cinder-volume')
#: The backend, its volume type and the pool Cinder reports.
BACKEND = 'zfsvault'
#: noauth's token: user and project (both admin).
NOAUTH_TOKEN = 'admin:admin'


def api_url(host=None):
    """cinder-api's v3 endpoint."""
    return 'http://%s:%d/v3' % (host or labkit.VAULT_ADDR, API_PORT)


def client(host=None):
    """An openstacksdk Connection to the lab's cinder-api, as its admin.

    With ``auth_strategy = noauth`` the token is ``user:project``. It goes
    on every request, version discovery included: unauthenticated,
    Cinder's noauth middleware answers that with an empty 204 instead of
    the microversions keystoneauth looks for.

    A request answered 500 is sent again, twice at most: on SQLite, a
    transaction that read and then writes fails at once with "database
    is locked" when another service committed in between (SQLite's
    SQLITE_BUSY_SNAPSHOT; oslo.db begins every transaction deferred). It
    failed a volume type's delete in CI (2026-12-02). A 500 that is not
    such a race fails all three times.
    """
    from keystoneauth1 import session
    from keystoneauth1 import token_endpoint
    import openstack
    sess = session.Session(
        auth=token_endpoint.Token(api_url(host), NOAUTH_TOKEN),
        additional_headers={'X-Auth-Token': NOAUTH_TOKEN})
    return openstack.connection.Connection(
        session=sess, block_storage_api_version='3',
        status_code_retries=2, retriable_status_codes=[500])


def _bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def _rabbit_password(user=RABBIT_USER):
    """The run's password of a RabbitMQ account (the lab's secret)."""
    if not labkit.MULTI:
        return 'lab-' + user
    return hashlib.sha256(labkit.lab_authkey() + user.encode()).hexdigest()


def _url(user, vhost=''):
    return 'rabbit://%s:%s@%s:5672/%s' % (user, _rabbit_password(user),
                                          labkit.VAULT_ADDR, vhost)


def transport_url():
    """Cinder's services' RabbitMQ: their account, their virtual host."""
    return _url(RABBIT_USER)


def driver_agent_url():
    """cinder-volume's way to the agents: its account on their vhost."""
    return _url(RABBIT_USER, AGENT_VHOST)


def agent_transport_url():
    """The agents' RabbitMQ: their own account, their virtual host."""
    return _url(AGENT_USER, AGENT_VHOST)


def conf_text(keystone_authtoken=None):
    """``cinder.conf`` of the vault host.

    :param keystone_authtoken: its ``[keystone_authtoken]`` section, for
        ``auth_strategy = keystone`` (tools/lab_tempest.py); noauth
        without it.
    """
    return '\n'.join([
        '[DEFAULT]',
        'auth_strategy = %s' % ('keystone' if keystone_authtoken
                                else 'noauth'),
        'transport_url = %s' % transport_url(),
        # cinder-api waits this long for cinder-volume's answer to an
        # attachment delete, whose final sync may take the driver's
        # zfs_vault_agent_detach_timeout (600 s): above it.
        'rpc_response_timeout = 660',
        'my_ip = %s' % labkit.VAULT_ADDR,
        'state_path = %s' % STATE,
        'api_paste_config = %s/api-paste.ini' % CONF_DIR,
        'osapi_volume_listen = %s' % labkit.VAULT_ADDR,
        'osapi_volume_listen_port = %d' % API_PORT,
        'osapi_volume_workers = 1',
        'log_dir = %s' % LOG_DIR,
        'enabled_backends = %s' % BACKEND,
        'default_volume_type = %s' % BACKEND,
        # Under TCG a service's report can be late; the default (60 s)
        # would mark it down and the scheduler would find no backend.
        'service_down_time = 180',
        # Each service's report is a write to the one SQLite file; fewer
        # of them leave fewer API writes failing at once with "database
        # is locked" (a write that began as a read is not retried).
        'report_interval = 30',
        'image_conversion_dir = %s/conversion' % STATE,
        'rootwrap_config = %s' % ROOTWRAP_CONF,
        '',
        '[database]',
        # Three processes share the file: wait for its lock (60 s) rather
        # than fail at once; the file is in WAL mode (ensure).
        'connection = sqlite:///%s?timeout=60' % DATABASE,
        '',
        '[oslo_concurrency]',
        # Cinder's own (its user's): the lease locks the driver shares with
        # the endpoint server are root's, taken in its privsep daemon.
        'lock_path = %s/lock' % STATE,
        '',
        '[%s]' % BACKEND,
        'volume_driver = cinder_zfs_vault.driver.ZFSVaultDriver',
        'volume_backend_name = %s' % BACKEND,
        'zfs_vault_dataset = vault',
        'zfs_vault_agent_transport_url = %s' % driver_agent_url(),
        'target_ip_address = %s' % labkit.PORTAL_IP,
        # Under TCG an agent busy with a seed answers late: with the
        # defaults (10 s, 50 s) a slow answer would turn an attach into
        # iSCSI, or fail it, on a loaded machine.
        'zfs_vault_agent_ping_timeout = 20',
        'zfs_vault_agent_attach_timeout = 300',
        '',
        keystone_authtoken or '',
    ])


def _get(path, token=NOAUTH_TOKEN):
    """JSON of ``GET <api>/<path>`` with ``token``, or None."""
    req = urllib.request.Request(api_url() + path, headers={
        'X-Auth-Token': token,
        'OpenStack-API-Version': 'volume 3.0'})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _up(binary, token=NOAUTH_TOKEN):
    """Whether cinder-api answers and, for another ``binary``, lists it up."""
    services = _get('/os-services', token)
    if binary == 'cinder-api' or services is None:
        return services is not None
    return any(s['binary'] == binary and s['state'] == 'up'
               for s in services.get('services', []))


def _rabbit_running():
    """RabbitMQ accepts AMQP connections (its listener opens last at boot).

    A connection, not ``rabbitmqctl status``: each rabbitmqctl starts an
    Erlang VM, over a minute in a starved TCG guest (CI, 2026-12-01).
    """
    try:
        socket.create_connection((labkit.VAULT_ADDR, 5672), timeout=5).close()
    except OSError:
        return False
    return True


def _password_hash(password):
    """RabbitMQ's ``rabbit_password_hashing_sha256`` of ``password``.

    base64(salt + sha256(salt + password)), a 4-byte random salt
    (RabbitMQ's passwords guide, "Computing Password Hash").
    """
    salt = os.urandom(4)
    return base64.b64encode(
        salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def rabbit_definitions():
    """Users, virtual hosts and permissions, as an operator declares them.

    Cinder's account on Cinder's ``/`` and on the agents' vhost (the
    driver calls them there); the agents' account on theirs only.
    """
    everything = {'configure': '.*', 'write': '.*', 'read': '.*'}
    return {
        'users': [{'name': user, 'tags': '',
                   'password_hash': _password_hash(_rabbit_password(user)),
                   'hashing_algorithm': 'rabbit_password_hashing_sha256'}
                  for user in (RABBIT_USER, AGENT_USER)],
        'vhosts': [{'name': '/'}, {'name': AGENT_VHOST}],
        'permissions': [dict(everything, user=user, vhost=vhost)
                        for user, vhost in ((RABBIT_USER, '/'),
                                            (RABBIT_USER, AGENT_VHOST),
                                            (AGENT_USER, AGENT_VHOST))],
    }


def _start_rabbit():
    """Start RabbitMQ with its accounts (their passwords: the run's).

    They are definitions loaded at its boot (``load_definitions``), on
    the empty database the guest has each run: no ``rabbitmqctl``, each
    of which starts an Erlang VM (~20 s of emulated CPU).
    """
    os.makedirs(os.path.dirname(RABBIT_CONF), exist_ok=True)
    with open(RABBIT_DEFINITIONS, 'w') as f:
        json.dump(rabbit_definitions(), f)
    # Password hashes: for RabbitMQ's eyes only.
    os.chmod(RABBIT_DEFINITIONS, 0o640)
    shutil.chown(RABBIT_DEFINITIONS, group='rabbitmq')
    with open(RABBIT_CONF, 'w') as f:
        f.write('load_definitions = %s\n' % RABBIT_DEFINITIONS)
    # Erlang's schedulers spin while idle by default; in a TCG guest that
    # spinning is emulated and takes CPU from the other guests.
    env = dict(os.environ, RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
        '+sbwt none +sbwtdcpu none +sbwtdio none'))
    with open(os.path.join(LOG_DIR, 'rabbitmq.out'), 'a') as out:
        subprocess.Popen(['rabbitmq-server'], stdin=subprocess.DEVNULL,
                         stdout=out, stderr=out, start_new_session=True,
                         env=env)


def _install_unprivileged():
    """Cinder's user and its one way to root, as a package installs them.

    The ``cinder`` system user owns Cinder's state, logs and locks; sudo
    lets it run ``cinder-rootwrap /etc/cinder/rootwrap.conf`` and nothing
    else; rootwrap runs what Cinder's ``volume.filters`` and this
    project's filters name, from the lab's virtualenv and the system's
    directories. A ``.pth`` puts the tree on the virtualenv's path: sudo
    drops ``PYTHONPATH``, and the privsep daemon imports the driver's
    privileged module.
    """
    try:
        pwd.getpwnam(USER)
    except KeyError:
        labkit.run('useradd', '--system', '--home-dir', STATE,
                   '--shell', '/usr/sbin/nologin', USER)
    package = os.path.join(sys.prefix, 'etc', 'cinder')
    with open(os.path.join(package, 'rootwrap.conf')) as f:
        text = f.read()
    bindir = os.path.dirname(sys.executable)
    text = '\n'.join(
        'exec_dirs=%s,/sbin,/usr/sbin,/bin,/usr/bin' % bindir
        if line.startswith('exec_dirs') else line
        for line in text.splitlines()) + '\n'
    with open(ROOTWRAP_CONF, 'w') as f:
        f.write(text)
    filters = os.path.join(CONF_DIR, 'rootwrap.d')
    os.makedirs(filters, exist_ok=True)
    shutil.copy(os.path.join(package, 'rootwrap.d', 'volume.filters'),
                filters)
    with open(os.path.join(filters, 'zfs-vault.filters'), 'w') as f:
        f.write(rootwrap.filters('vault'))
    if not os.path.lexists(ROOTWRAP_BIN):
        os.symlink(os.path.join(bindir, 'cinder-rootwrap'), ROOTWRAP_BIN)
    with open(SUDOERS, 'w') as f:
        f.write('Defaults:%(u)s !requiretty\n'
                # Bytecode of the shared tree stays out of it, as in the lab's
                # own processes.
                'Defaults:%(u)s env_keep += "PYTHONDONTWRITEBYTECODE"\n'
                '%(u)s ALL = (root) NOPASSWD: %(bin)s %(conf)s *\n'
                % {'u': USER, 'bin': ROOTWRAP_BIN, 'conf': ROOTWRAP_CONF})
    os.chmod(SUDOERS, 0o440)
    with open(os.path.join(sysconfig.get_paths()['purelib'],
                           'zfs-vault-lab-tree.pth'), 'w') as f:
        f.write(TREE + '\n')
    for path in (STATE, LOG_DIR, STATE + '/conversion', STATE + '/lock'):
        os.makedirs(path, exist_ok=True)
        shutil.chown(path, USER, USER)
    # Its configuration: readable by Cinder's group, written by root.
    for name in os.listdir(CONF_DIR):
        path = os.path.join(CONF_DIR, name)
        if os.path.isfile(path):
            os.chmod(path, 0o640)
            shutil.chown(path, 'root', USER)


def _as_cinder():
    """subprocess keywords: as Cinder's user (its home, the lab's path)."""
    return dict(user=USER, group=USER, extra_groups=[],
                env=dict(os.environ, HOME=STATE, USER=USER, LOGNAME=USER))


def run_as_cinder(argv, timeout):
    """Run ``argv`` as Cinder's user, killed after ``timeout`` seconds.

    :returns: (exit status, output and errors as text).
    """
    done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, **_as_cinder())
    return done.returncode, done.stdout.decode(errors='replace')


def _wait_for(check, deadline, what):
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError('%s: see %s on the vault' % (what, LOG_DIR))
        time.sleep(2)


def ensure(timeout=600, keystone=None):
    """Start RabbitMQ and Cinder's services on this (vault) host if needed.

    Idempotent: a running set is left alone. Returns once cinder-volume
    reports itself up through the API. :raises TimeoutError: not in
    ``timeout`` seconds (see :data:`LOG_DIR`).

    :param keystone: ``(its [keystone_authtoken] section, an admin
        token)`` for cinder-api on Keystone's auth (tools/lab_tempest.py);
        with noauth by default.
    """
    authtoken, token = keystone or (None, NOAUTH_TOKEN)
    if _up('cinder-volume', token):
        return
    deadline = time.monotonic() + timeout
    for path in (CONF_DIR, STATE, LOG_DIR, STATE + '/conversion'):
        os.makedirs(path, exist_ok=True)
    with open(CONF, 'w') as f:
        f.write(conf_text(authtoken))
    # As an operator installs them from the package's etc/cinder: without
    # resource_filters.json cinder-api drops every list filter a non-admin
    # user sends (name, status, ...) and lists all (tempest's
    # VolumesListTestJSON, lab 2026-12-06).
    for name in PACKAGE_CONF_FILES:
        shutil.copy(os.path.join(sys.prefix, 'etc', 'cinder', name),
                    CONF_DIR)
    _install_unprivileged()
    if not _rabbit_running():
        _start_rabbit()
    # While RabbitMQ boots: the database does not need it.
    rc, out = run_as_cinder(
        [_bin('cinder-manage'), '--config-file', CONF, 'db', 'sync'], timeout)
    if rc:
        raise RuntimeError('cinder-manage db sync: %s' % out)
    # Readers no longer block the writer, nor it them (sqlite.org/wal.html).
    with sqlite3.connect(DATABASE) as db:
        db.execute('PRAGMA journal_mode=WAL')
    for name in os.listdir(STATE):  # the -wal and -shm files root made
        if name.startswith(os.path.basename(DATABASE)):
            shutil.chown(os.path.join(STATE, name), USER, USER)
    _wait_for(_rabbit_running, deadline, 'RabbitMQ did not start')
    # One at a time, each up before the next starts: started together,
    # their first writes to the one SQLite file collided and cinder-volume's
    # backend died at start ("database is locked", lab 2026-12-02), while
    # the service row it had written still showed it up.
    for service in SERVICES:
        if subprocess.run(['pgrep', '-f', _bin(service)],
                          capture_output=True).returncode != 0:
            with open(os.path.join(LOG_DIR, service + '.out'), 'a') as out:
                subprocess.Popen([_bin(service), '--config-file', CONF],
                                 stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=out, start_new_session=True,
                                 **_as_cinder())
        _wait_for(lambda: _up(service, token), deadline,
                  '%s is not up after %d s' % (service, timeout))


def stop(timeout=120):
    """Stop Cinder's services and RabbitMQ, as a shutdown would.

    SIGTERM, SIGKILL after ``timeout`` seconds; the database stays.

    The lab's API tests run first and stop them when done: idle, their
    periodic tasks and heartbeats still take emulated CPU from every
    later test.
    """
    patterns = [_bin(service) for service in SERVICES] + ['beam.smp']
    for pattern in patterns:
        subprocess.run(['pkill', '-TERM', '-f', pattern], check=False)
    deadline = time.monotonic() + timeout
    for pattern in patterns:
        while subprocess.run(['pgrep', '-f', pattern],
                             capture_output=True).returncode == 0:
            if time.monotonic() > deadline:
                subprocess.run(['pkill', '-KILL', '-f', pattern],
                               check=False)
                break
            time.sleep(1)


def logs(tail=200):
    """The last ``tail`` lines of each service's log: {name: text}."""
    found = {}
    for name in sorted(os.listdir(LOG_DIR)) if os.path.isdir(LOG_DIR) \
            else ():
        with open(os.path.join(LOG_DIR, name), errors='replace') as f:
            found[name] = ''.join(f.readlines()[-tail:])
    return found
