"""Subcommands of ``emotion-agent``; each module exposes ``register(subparsers)``."""
