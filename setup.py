"""The one thing pyproject.toml cannot say: the C part of the trace analyzer.

`optional=True`: without a C compiler chainlab still installs, and analysis runs on the
Python engine (slower on big logs; `chainlab analyze` says so on stderr).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "chainlab.trace._engine",
            sources=["src/chainlab/trace/_engine.c"],
            extra_compile_args=["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                "-Wno-unused-parameter", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)
