"""Command line programs of cinder-zfs-vault."""
