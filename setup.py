"""Installs the four top-level folders as subpackages of the one import name `privit`.

`privit` itself comes from launch/_toplevel (its `__init__` holds `__version__` and
nothing else, and its `py.typed` marks the whole package as typed), so nothing generic
(`models`, `launch`) lands at the top of site-packages.

Dependency bounds: every lower bound is a version `.ci/run` installs and tests (its
"lowest" pass, from .ci/lowest-constraints.txt); an upper bound only where a release is
known to break us, with a comment naming it. .ci/constraints-last-green.txt records the
newest versions the last green CI run picked.
"""
import ast
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
SUBPACKAGES = ("parties", "protocols", "models", "launch")
TOPLEVEL = "launch/_toplevel"


def read_version() -> str:
    """`__version__` from the top-level __init__, read without importing the package."""
    tree = ast.parse((ROOT / TOPLEVEL / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise RuntimeError(f"no __version__ in {TOPLEVEL}/__init__.py")


setup(
    name="privit",
    version=read_version(),
    description="Private (secret-shared) ViT inference over ZeroMQ, with honest cost accounting",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Console",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Security :: Cryptography",
        "Typing :: Typed",
    ],
    # CI runs Python 3.11 only (the one interpreter with a CPU torch wheel on its machines).
    python_requires=">=3.11",
    packages=["privit", *(f"privit.{name}" for name in SUBPACKAGES)],
    package_dir={"privit": TOPLEVEL, **{f"privit.{name}": name for name in SUBPACKAGES}},
    package_data={"privit": ["py.typed"], "privit.models": ["assets/*.pth.tar", "assets/*.pt"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.13",
        "pyzmq>=25.1",
        "msgpack>=1.0.5",
        "numpy>=1.24",
        "click>=8.1",
        "cryptography>=41",
        "tqdm>=4.60",
        "rich>=13.3",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "pillow>=9.4",
    ],
    extras_require={
        "test": ["pytest>=7.4", "pytest-timeout>=2.2", "packaging>=22", "hypothesis>=6.80"],
        "dev": ["ruff>=0.6", "mypy>=1.10", "types-tqdm"],
    },
    entry_points={"console_scripts": ["privit=privit.launch.cli:run_cli"]},
)
