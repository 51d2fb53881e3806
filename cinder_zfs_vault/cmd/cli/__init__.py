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

"""``zfs-vault``, the operator CLI, laid out as python-openstackclient is.

- :mod:`.app`: the cliff application, the console script's ``main`` and
  what the commands run on (the engine, the orchestrator, the vault);
- :mod:`.format`: sizes, times, attribute columns and the progress bar;
- :mod:`.common`: the VOLUME argument, finding a disk, lease refusals and
  the attribute options;
- one module of ``<Verb><Resource>`` commands per resource: :mod:`.disk`
  (``list``, ``show``, ``set``, ``unset``), :mod:`.vault` (``vault
  show``, ``vault set``, ``vault unset``), :mod:`.lease` (``lock``,
  ``unlock``, ``allow``) and :mod:`.replica` (``attach``, ``detach``,
  ``sync``, ``discard``, ``mapped``).

Each command is an entry point of the ``zfs_vault.cli`` namespace
(``setup.cfg``); the status they print is the core's
(:mod:`cinder_zfs_vault.status`).
"""
