"""The one thing pyproject.toml cannot say: the C part of the trace analyzer.

`optional=True`: without a C compiler chainlab still installs, and analysis runs on the
Python engine (slower on big logs; `chainlab analyze` says so on stderr).

The build carries the SHA-256 of the `_engine.c` and engine/ parts it was compiled from
(ENGINE_SOURCE, made by trace/engine_source.py): when a later compile fails, the previous
build stays in place, and native.py refuses it because it no longer matches the sources
beside it.
"""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup

TRACE = Path(__file__).parent / "src" / "chainlab" / "trace"
SOURCE = "src/chainlab/trace/_engine.c"  # includes the parts in trace/engine/: one translation unit
_spec = importlib.util.spec_from_file_location("engine_source", TRACE / "engine_source.py")
engine_source = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(engine_source)
DIGEST = engine_source.digest(TRACE)

setup(
    ext_modules=[
        Extension(
            "chainlab.trace._engine",
            sources=[SOURCE],
            depends=[str(path.relative_to(Path(__file__).parent)) for path in engine_source.files(TRACE)[1:]],
            define_macros=[("ENGINE_SOURCE", f'"{DIGEST}"')],
            extra_compile_args=["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                "-Wno-unused-parameter", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)
