"""privit: private (secret-shared) ViT inference over ZeroMQ, with honest cost accounting.

This file is the top-level package `privit` once installed: setup.py maps the import name
`privit` to this folder and `privit.parties`, `privit.protocols`, `privit.models`,
`privit.launch` to the four folders at the repository root. It holds the one version
source and nothing else, so `import privit` has no side effects.
"""

__version__ = "0.3.0"
