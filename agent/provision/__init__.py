"""Provisioning for installers: one device bundle per card, written onto its boot partition.

``site`` reads the site file, ``keys`` makes the device identity, ``bundle`` assembles the
files (config, keys, certificate request, MANIFEST of modes, SHA256SUMS), ``boot`` writes them
to a mounted boot partition or a FAT image through mtools. The first-boot importer
(``systemd/emotion-agent-import``) moves them into /etc/emotion-agent on the device.
"""
