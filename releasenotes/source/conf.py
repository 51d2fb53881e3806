extensions = ['reno.sphinxext']
project = 'cinder-zfs-vault release notes'
master_doc = 'index'
html_theme = 'alabaster'
