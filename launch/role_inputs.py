"""A role's own inputs: party 0's checkpoint, party 1's images, a public architecture file.

Kept apart from the jobs (and free of heavy imports) so that the command line can check
who gets what before anything starts.
"""
from __future__ import annotations

from dataclasses import dataclass

WEIGHT_OWNER = 0  # party 0 owns the model (docs/design.md: the model owner and the client)
DATA_OWNER = 1  # party 1 owns the images


@dataclass(frozen=True)
class RoleInputs:
    """What one role brings besides the public run config: its own secret, nothing else.

    checkpoint: party 0's model file (the weights); images: party 1's images file; arch:
    a public-architecture file (`privit arch --out`) any role may pin, so that a party 0
    announcing another architecture is refused. `role` None means one user holds all
    (the coordinator's plaintext reference, in-memory tests).
    """

    role: int | None = None
    checkpoint: str | None = None
    images: str | None = None
    arch: str | None = None

    def for_role(self, role: int) -> RoleInputs:
        """The part of these inputs that `role` may hold (the checkpoint to party 0 only,
        the images to party 1 only, the public architecture to everyone)."""
        return RoleInputs(role=role,
                          checkpoint=self.checkpoint if role == WEIGHT_OWNER else None,
                          images=self.images if role == DATA_OWNER else None,
                          arch=self.arch)


ALL_INPUTS = RoleInputs()
