"""The one thing pyproject.toml cannot say: the C part of the trace analyzer.

`optional=True`: without a C compiler chainlab still installs, and analysis runs on the
Python engine (slower on big logs; `chainlab analyze` says so on stderr).

The build carries the SHA-256 of the `_engine.c` it was compiled from (ENGINE_SOURCE):
when a later compile fails, the previous build stays in place, and native.py refuses it
because it no longer matches the source beside it.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "src/chainlab/trace/_engine.c"
DIGEST = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "chainlab.trace._engine",
            sources=[SOURCE],
            define_macros=[("ENGINE_SOURCE", f'"{DIGEST}"')],
            extra_compile_args=["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                "-Wno-unused-parameter", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)
