"""cinder-zfs-vault: VM disks as ZFS zvols in a central vault.

The core (``zfs``, ``vault``, ``validation``, ``executor``) holds no Cinder
objects; ``driver`` is the thin Cinder adapter over it.
"""
