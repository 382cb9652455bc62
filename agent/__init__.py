"""emotion-agent: facial-emotion statistics that never keep an image.

Importing this package has no side effects: no device is probed, no file is read.
"""

__version__ = "0.1.0"
