"""The seven emotions the agent infers, counts and publishes (FER2013's classes), and nothing else.

Every layer reads them here: the vision stage checks a model's labels against them, the
analytics count them, discovery names their sensors, and the fleet receiver refuses any other
vote name in a device's window (it never imports the vision stage).
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
