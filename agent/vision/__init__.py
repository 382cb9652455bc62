"""The vision stage: the only code that sees pixels. It returns numbers, never arrays."""
