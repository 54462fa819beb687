"""The one compiled part: the replay kernel (engine/_replay_kernel.pyx, see engine/replay.py).

Everything else is in pyproject.toml. Cython is a build requirement there; the machine needs
a C compiler and Python's headers (Debian: gcc, python3-dev; both on the project's machines).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "engine._replay_kernel", ["engine/_replay_kernel.pyx"], extra_compile_args=["-O2"]
            )
        ],
        compiler_directives={"language_level": "3"},
    )
)
