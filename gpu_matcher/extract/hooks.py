"""What the extractors' forward hooks share: the handles they registered and what each saw per pass.

No PyTorch import here, so ``extract.hf`` stays importable without it (the CLI registers its command).
"""

from __future__ import annotations


class HookSet:
    """Forward hooks registered on a model (``handles``) and, per name, what each saw in this pass."""

    def __init__(self) -> None:
        self.handles: list = []
        self.seen: dict[str, list] = {}

    def clear(self) -> None:
        """Forget what the last forward pass left (call before the next one)."""
        for calls in self.seen.values():
            calls.clear()

    def remove(self) -> None:
        """Unregister every hook."""
        for handle in self.handles:
            handle.remove()
