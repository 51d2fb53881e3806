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

"""Tempest's volume API tests against the lab's Cinder, as a peer's suite.

``tools/zfs-lab tempest [REGEX]`` runs :func:`main` in the single lab
guest, which holds the vault (the pool ``vault``, cinder-volume with this
driver). Tempest needs Keystone: this module runs one on the guest
(SQLite, fernet tokens, bcrypt at its minimum cost as the guest is
emulated), registers Cinder's service user and endpoints in it, starts
Cinder's services with ``auth_strategy = keystone``
(:func:`tools.lab_cinder.ensure`) and runs ``tempest.api.volume`` with
Cinder alone: no Nova, Glance, Neutron, Swift nor cinder-backup, so the
tests that need them are skipped by tempest itself.

Keystone and tempest are in their own virtualenv, :data:`VENV`, built
on the host by ``tools/zfs-lab tempest`` (their pins are not Cinder's)
and seen read-only in the guest. Its programs are run as ``VENV/bin/python
-m MODULE``, never through its ``bin/`` scripts, whose ``#!`` line names
the path it was built at.

Keystone is served by the standard library's WSGI server, one thread a
request (``keystone.wsgi.api`` needs no Apache or uWSGI). Like
:mod:`tools.lab_cinder`, the services run as root, without systemd;
tempest's workspace is :data:`WORKSPACE`, in the tree (its ``logs/run.out``
shows the run as it goes); Keystone's and Cinder's logs are copied beside
it at the end.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tools import lab_cinder
from tools import labkit

#: Keystone's and tempest's virtualenv (tools/zfs-lab builds it).
VENV = '/lab-share/tempest-venv'
PYTHON = os.path.join(VENV, 'bin', 'python')
KEYSTONE_CONF_DIR = '/etc/keystone'
KEYSTONE_CONF = os.path.join(KEYSTONE_CONF_DIR, 'keystone.conf')
KEYSTONE_STATE = '/var/lib/keystone'
KEYSTONE_DATABASE = os.path.join(KEYSTONE_STATE, 'keystone.sqlite')
KEYSTONE_LOG_DIR = '/var/log/keystone'
KEYSTONE_PORT = 5000
REGION = 'RegionOne'
#: The project of the services' users, and Cinder's user in it.
SERVICE_PROJECT = 'service'
CINDER_USER = 'cinder'
#: bcrypt's minimum cost (2**4 rounds; the default, 12, is 256 times
#: that): every token issued checks a password, ~20 times slower here.
PASSWORD_HASH_ROUNDS = 4
#: Where the run's results and logs are kept: the tree's ``.tempest/``,
#: which the host sees while the tests run.
RESULTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), '.tempest')
#: Tempest's workspace: its configuration, logs and stestr repository.
WORKSPACE = os.path.join(RESULTS, 'workspace')
VOLUME_TESTS = r'^tempest\.api\.volume'

# keystone-manage's four setup commands in one process: each process
# spends ~3 s (on the host; a minute under TCG) importing keystone. The
# CLI registers its sub-command option and parses sys.argv anew on each
# call: clear the parsed state in between.
_SETUP_KEYSTONE = r'''
import sys
from keystone.cmd import cli
conf, password, url, region = sys.argv[1:]
owner = ['--keystone-user', 'root', '--keystone-group', 'root']
for args in (['db_sync'], ['fernet_setup'] + owner,
             ['credential_setup'] + owner,
             ['bootstrap', '--bootstrap-password', password,
              '--bootstrap-region-id', region,
              '--bootstrap-admin-url', url, '--bootstrap-internal-url', url,
              '--bootstrap-public-url', url]):
    cli.CONF.clear()
    try:
        cli.CONF.unregister_opt(cli.command_opt)
    except Exception:
        pass
    cli.main(argv=['keystone-manage', '--config-file', conf] + args)
'''

# Keystone's WSGI application in a threading wsgiref server. oslo.config
# parses sys.argv when the application loads: it is emptied first.
_SERVE_KEYSTONE = r'''
import os, socketserver, sys
from wsgiref import simple_server
conf, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ['OS_KEYSTONE_CONFIG_FILES'] = conf
del sys.argv[1:]
from keystone.server import wsgi
app = wsgi.initialize_public_application()

class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True

simple_server.make_server(host, port, app,
                          server_class=Server).serve_forever()
'''


def identity_url(host=None):
    """Keystone's v3 endpoint (public, internal and admin alike)."""
    return 'http://%s:%d/v3' % (host or labkit.VAULT_ADDR, KEYSTONE_PORT)


def password(user):
    """``user``'s Keystone password: from the run's secret in a lab."""
    if not labkit.MULTI:
        return 'lab-' + user
    digest = hashlib.sha256(labkit.lab_authkey() + user.encode())
    return digest.hexdigest()[:24]


def keystone_conf_text():
    """``keystone.conf`` of the vault host."""
    return '\n'.join([
        '[DEFAULT]',
        'log_dir = %s' % KEYSTONE_LOG_DIR,
        'log_file = keystone.log',
        '',
        '[database]',
        # Tempest's users are written while Cinder's token checks read:
        # wait for the file's lock (60 s) rather than fail at once.
        'connection = sqlite:///%s?timeout=60' % KEYSTONE_DATABASE,
        '',
        '[token]',
        'provider = fernet',
        '',
        '[identity]',
        'password_hash_rounds = %d' % PASSWORD_HASH_ROUNDS,
        '',
        '[fernet_tokens]',
        'key_repository = %s/fernet-keys' % KEYSTONE_CONF_DIR,
        '',
        '[credential]',
        'key_repository = %s/credential-keys' % KEYSTONE_CONF_DIR,
        '',
    ])


def _keystone_up():
    """Whether Keystone answers its version document."""
    try:
        with urllib.request.urlopen(identity_url(), timeout=10) as resp:
            return 'version' in json.load(resp)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _wait_for(check, deadline, what):
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError('%s: see %s on the vault'
                               % (what, KEYSTONE_LOG_DIR))
        time.sleep(2)


def connection():
    """An openstacksdk Connection to Keystone as its admin (project admin)."""
    import openstack
    return openstack.connection.Connection(
        auth_url=identity_url(), username='admin',
        password=password('admin'), project_name='admin',
        user_domain_name='Default', project_domain_name='Default',
        region_name=REGION, identity_api_version='3')


def register(conn):
    """Register Cinder in Keystone (idempotent).

    Cinder's user, with the roles admin and service in the project
    ``service``; its services ``block-storage`` (tempest's default
    catalog type) and ``volumev3``, each with its three endpoints at
    cinder-api.
    """
    identity = conn.identity
    project = (identity.find_project(SERVICE_PROJECT, domain_id='default')
               or identity.create_project(name=SERVICE_PROJECT,
                                          domain_id='default'))
    user = (identity.find_user(CINDER_USER, domain_id='default')
            or identity.create_user(name=CINDER_USER, domain_id='default',
                                    password=password(CINDER_USER),
                                    default_project_id=project.id))
    for role in ('admin', 'service'):
        identity.assign_project_role_to_user(
            project, user, identity.find_role(role, ignore_missing=False))
    url = lab_cinder.api_url() + '/$(project_id)s'
    for name, kind in (('cinder', 'block-storage'), ('cinderv3', 'volumev3')):
        service = (identity.find_service(name)
                   or identity.create_service(name=name, type=kind))
        have = {e.interface for e in identity.endpoints(service_id=service.id)}
        for interface in {'public', 'internal', 'admin'} - have:
            identity.create_endpoint(service_id=service.id, url=url,
                                     interface=interface, region_id=REGION)


def ensure_keystone(timeout=900):
    """Set up and start Keystone on this (vault) host if needed.

    Idempotent: a Keystone that answers is left alone (and its
    registrations made again). Returns the ``cinder.conf`` sections for
    ``auth_strategy = keystone`` (:func:`authtoken_conf_text`).
    :raises TimeoutError: not up in ``timeout`` seconds.
    :raises CalledProcessError: keystone-manage failed.
    """
    deadline = time.monotonic() + timeout
    if not _keystone_up():
        for path in (KEYSTONE_CONF_DIR, KEYSTONE_STATE, KEYSTONE_LOG_DIR):
            os.makedirs(path, exist_ok=True)
        # Keys readable by others: a warning in the log at each request.
        for keys in ('fernet-keys', 'credential-keys'):
            os.makedirs(os.path.join(KEYSTONE_CONF_DIR, keys), mode=0o700,
                        exist_ok=True)
        with open(KEYSTONE_CONF, 'w') as f:
            f.write(keystone_conf_text())
        if not os.path.exists(KEYSTONE_DATABASE):
            labkit.run(PYTHON, '-c', _SETUP_KEYSTONE, KEYSTONE_CONF,
                       password('admin'), identity_url(), REGION,
                       timeout=timeout)
        with open(os.path.join(KEYSTONE_LOG_DIR, 'wsgi.out'), 'a') as out:
            subprocess.Popen(
                [PYTHON, '-c', _SERVE_KEYSTONE, KEYSTONE_CONF,
                 labkit.VAULT_ADDR, str(KEYSTONE_PORT)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        _wait_for(_keystone_up, deadline, 'Keystone did not start')
    register(connection())
    return authtoken_conf_text()


def authtoken_conf_text():
    """cinder.conf's ``[keystone_authtoken]`` section.

    For keystonemiddleware's checks of tokens, and Cinder's own calls to
    Keystone (the projects of quotas and of volume types' access).
    """
    return '\n'.join([
        '[keystone_authtoken]',
        'www_authenticate_uri = %s' % identity_url(),
        'auth_url = %s' % identity_url(),
        'auth_type = password',
        'username = %s' % CINDER_USER,
        'password = %s' % password(CINDER_USER),
        'user_domain_name = Default',
        'project_name = %s' % SERVICE_PROJECT,
        'project_domain_name = Default',
        'region_name = %s' % REGION,
        'interface = public',
        # A token that comes with a service token (X-Service-Token) is
        # taken as a service's only if that one has the role ``service``.
        'service_token_roles = service',
        'service_token_roles_required = true',
        # No memcached: the middleware caches validated tokens in memory
        # (300 s). Keystone answers slowly under TCG: wait for it.
        'http_connect_timeout = 60',
        'http_request_max_retries = 3',
        '',
    ])


def tempest_conf_text():
    """``tempest.conf`` for the vault's Cinder and Keystone.

    Cinder alone (no Nova, Glance, Neutron, Swift nor cinder-backup),
    one backend; dynamic credentials made by Keystone's admin.
    """
    return '\n'.join([
        '[DEFAULT]',
        'log_dir = %s/logs' % WORKSPACE,
        'log_file = tempest.log',
        '',
        '[oslo_concurrency]',
        'lock_path = %s/tempest_lock' % WORKSPACE,
        '',
        '[auth]',
        'use_dynamic_credentials = true',
        'create_isolated_networks = false',
        'admin_username = admin',
        'admin_password = %s' % password('admin'),
        'admin_project_name = admin',
        'admin_domain_name = Default',
        '',
        '[identity]',
        'uri_v3 = %s' % identity_url(),
        'auth_version = v3',
        'region = %s' % REGION,
        '',
        '[identity-feature-enabled]',
        'api_v2 = false',
        '',
        '[service_available]',
        'cinder = true',
        'nova = false',
        'glance = false',
        'neutron = false',
        'swift = false',
        '',
        '[validation]',
        'run_validation = false',
        '',
        '[volume]',
        'catalog_type = block-storage',
        'region = %s' % REGION,
        'backend_names = %s' % lab_cinder.BACKEND,
        # What the driver reports (its get_volume_stats).
        'storage_protocol = iSCSI',
        'vendor_name = Open Source',
        # Seconds a volume or snapshot may take to become available or
        # be deleted (tempest's default, 300, is short under TCG).
        'build_timeout = 600',
        'build_interval = 2',
        'max_microversion = latest',
        '',
        '[volume-feature-enabled]',
        'backup = false',
        'multi_backend = false',
        # The driver manages a zvol by name (manage_volume_ref's default,
        # source-name volume-%s).
        'manage_volume = true',
        'manage_snapshot = false',
        'extend_attached_volume = false',
        'extend_attached_encrypted_volume = false',
        # Images and instance snapshots: Glance and Nova.
        'enable_volume_image_dep_tests = false',
        '',
    ])


def _venv(*args, **kwargs):
    """``PYTHON -m args`` in :data:`WORKSPACE`, once made."""
    return subprocess.run([PYTHON, '-m'] + list(args), check=False,
                          cwd=WORKSPACE if os.path.isdir(WORKSPACE) else '/',
                          **kwargs)


def run_tempest(regex=VOLUME_TESTS, timeout=4 * 3600):
    """Run tempest's tests matching ``regex``, one at a time.

    Keystone and Cinder on it (:func:`main`) must be running.
    Tempest's output is in ``WORKSPACE/logs/run.out``, its log in
    ``WORKSPACE/logs/tempest.log``. Returns :func:`results` of the run.
    :raises TimeoutExpired: it ran longer than ``timeout`` seconds.
    """
    if not os.path.exists(os.path.join(WORKSPACE, '.stestr.conf')):
        # tempest init makes the workspace's own folder only (os.mkdir).
        os.makedirs(RESULTS, exist_ok=True)
        init = _venv('tempest.cmd.main', 'init', WORKSPACE,
                     capture_output=True, text=True, timeout=600)
        if init.returncode:
            raise RuntimeError('tempest init %s failed: %s'
                               % (WORKSPACE, init.stdout + init.stderr))
    with open(os.path.join(WORKSPACE, 'etc', 'tempest.conf'), 'w') as f:
        f.write(tempest_conf_text())
    with open(os.path.join(WORKSPACE, 'logs', 'run.out'), 'w') as out:
        # Exits 1 when a test failed: the results tell.
        _venv('tempest.cmd.main', 'run', '--regex', regex,
              '--concurrency', '1', stdout=out, stderr=subprocess.STDOUT,
              timeout=timeout)
    stream = _venv('stestr', 'last', '--subunit', capture_output=True,
                   timeout=600).stdout
    return results(stream)


def _error_line(traceback):
    """The first line of the exception a traceback ends with."""
    lines = traceback.splitlines()
    frames = [i for i, line in enumerate(lines)
              if line.startswith('  File ')]
    for line in lines[frames[-1] + 1 if frames else 0:]:
        if line.strip() and not line.startswith(' '):
            return line.strip()
    return lines[-1].strip() if lines else ''


def results(stream):
    """Counts of a subunit v2 ``stream`` (bytes) of tests.

    Returns ``{'passed': n, 'failed': n, 'skipped': n,
    'failures': [(test id, first line of its error)],
    'skips': {reason: number of tests}}``. A class whose setup failed
    counts as one failure (id ``setUpClass (its.class)``).
    """
    import io

    import subunit
    import testtools

    found = {'passed': 0, 'failed': 0, 'skipped': 0, 'failures': [],
             'skips': {}}

    def on_test(test):
        details = test['details']
        status = test['status']
        if status in ('success', 'xfail'):
            found['passed'] += 1
        elif status == 'skip':
            found['skipped'] += 1
            reason = (details['reason'].as_text().strip()
                      if 'reason' in details else '?')
            found['skips'][reason] = found['skips'].get(reason, 0) + 1
        elif status != 'exists':  # fail, uxsuccess; None: cut short
            found['failed'] += 1
            text = (details['traceback'].as_text()
                    if 'traceback' in details else str(status))
            found['failures'].append((test['id'], _error_line(text)))

    case = subunit.ByteStreamToStreamResult(io.BytesIO(stream),
                                            non_subunit_name='stdout')
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        case.run(result)
    finally:
        result.stopTestRun()
    return found


def summary(found):
    """Text of :func:`results`.

    Failures, skip reasons, then the line ``N passed, N failed, N
    skipped``.
    """
    lines = ['FAIL %s: %s' % failure for failure in found['failures']]
    lines += ['skipped %d: %s' % (n, reason) for reason, n in
              sorted(found['skips'].items(), key=lambda kv: -kv[1])]
    lines.append('%(passed)d passed, %(failed)d failed, %(skipped)d skipped'
                 % found)
    return '\n'.join(lines)


def token():
    """A token of Keystone's admin, scoped to its project (1 h)."""
    return connection().auth_token


def volume_type(conn):
    """The backend's volume type, cinder.conf's ``default_volume_type``."""
    api = conn.block_storage
    if not api.find_type(lab_cinder.BACKEND):
        api.create_type(
            name=lab_cinder.BACKEND,
            extra_specs={'volume_backend_name': lab_cinder.BACKEND})


def keep_logs(dest=RESULTS):
    """Keystone's and Cinder's logs under ``dest``."""
    for name, path in (('keystone', KEYSTONE_LOG_DIR),
                       ('cinder', lab_cinder.LOG_DIR)):
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(dest, name),
                            dirs_exist_ok=True)


def main(argv=None):
    """Keystone, Cinder on it, then tempest's tests: prints the summary.

    :returns: the exit status: 0 if no test failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('regex', nargs='?', default=VOLUME_TESTS,
                        help='the tests to run (default: %(default)s)')
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    start = time.monotonic()
    labkit.setup(cinder=False)
    authtoken = ensure_keystone()
    print('lab tempest: Keystone up at %.0f s' % (time.monotonic() - start))
    lab_cinder.ensure(keystone=(authtoken, token()))
    volume_type(connection())
    print('lab tempest: Cinder on Keystone up at %.0f s'
          % (time.monotonic() - start))
    try:
        found = run_tempest(args.regex)
    finally:
        keep_logs()
    print(summary(found))
    print('lab tempest: %s in %.0f s; logs in %s'
          % (args.regex, time.monotonic() - start, RESULTS))
    return 1 if found['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
