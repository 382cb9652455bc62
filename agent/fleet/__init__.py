"""The receiving side: verify, store and witness what a fleet of devices publishes.

It imports the crypto, audit and transport-neutral layers and never the camera, vision or
privacy packages: a receiver sees only what devices publish (docs/fleet.md).
"""
