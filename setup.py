"""Installs the four top-level folders as subpackages of the one import name `privit`.

`privit` itself is an implicit namespace package: nothing generic (`models`,
`launch`) lands at the top of site-packages.
"""
from setuptools import setup

SUBPACKAGES = ("parties", "protocols", "models", "launch")

setup(
    name="privit",
    version="0.1.0",
    description="Private (secret-shared) ViT inference over ZeroMQ, with honest cost accounting",
    python_requires=">=3.10",
    packages=[f"privit.{name}" for name in SUBPACKAGES],
    package_dir={f"privit.{name}": name for name in SUBPACKAGES},
    package_data={"privit.models": ["assets/*.pth.tar"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.2",
        "pyzmq>=25",
        "msgpack>=1.0",
        "numpy>=1.24",
        "click>=8.1",
        "cryptography>=41",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
    ],
    extras_require={"test": ["pytest>=7.4", "pytest-timeout>=2.2"], "dev": ["ruff", "mypy"]},
    entry_points={"console_scripts": ["privit=privit.launch.cli:main"]},
)
