"""Functional tests across hosts: run on compute-1 of a lab of hosts.

``tools/zfs-lab test --hosts vault,compute-1,compute-2``: the replica
engine on this compute guest reaches the vault guest only through its
endpoint, with this host's restricted SSH key.
"""
