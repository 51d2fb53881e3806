# Sphinx configuration of the cinder-zfs-vault documentation.
extensions = ['sphinx.ext.autodoc', 'oslo_config.sphinxext']
project = 'cinder-zfs-vault'
copyright = '2026, cinder-zfs-vault developers'
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
