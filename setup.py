"""Build the Cython kernels, with OpenMP when the compiler supports it.

Every ``src/fastrec/kernels/_cython/*.pyx`` becomes an extension module. OpenMP support is
probed by compiling and linking a tiny program; without it the kernels still build but run on
one thread, and the build says so loudly (``fastrec info`` reports it too). The modules are
compiled in parallel, each announced by one line (shown by ``python -m build`` and
``pip install -v``; plain pip hides a build's output), without debug information (``-g0``,
debug sections stripped at link): the wheel ships .so files and .pyx/.pxd sources, not the
generated C.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CYTHON_DIR = Path("src") / "fastrec" / "kernels" / "_cython"
# gcc and LLVM clang: -fopenmp. Release builds elsewhere set these (see [tool.cibuildwheel] in
# pyproject.toml): Apple clang with Homebrew's libomp, "-Xpreprocessor -fopenmp" / "-lomp".
OPENMP_CFLAGS = os.environ.get("FASTREC_OPENMP_CFLAGS", "-fopenmp").split()
OPENMP_LDFLAGS = os.environ.get("FASTREC_OPENMP_LDFLAGS", "-fopenmp").split()
# No debug information in the shipped .so files (Python's CFLAGS carry -g): 4x smaller.
NO_DEBUG_COMPILE = [] if sys.platform == "win32" else ["-g0"]
NO_DEBUG_LINK = [] if sys.platform == "win32" else ["-Wl,-S"]
OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def openmp_supported() -> bool:
    if os.environ.get("FASTREC_DISABLE_OPENMP"):
        return False
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        cmd = cc.split() + OPENMP_CFLAGS + [src, "-o", os.path.join(tmp, "probe")] + OPENMP_LDFLAGS
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extensions():
    use_openmp = openmp_supported()
    if use_openmp:
        print("fastrec build: OpenMP found, Cython kernels will run in parallel", file=sys.stderr)
    else:
        print(
            "fastrec build: WARNING: OpenMP NOT available; Cython kernels will run on ONE thread",
            file=sys.stderr,
        )
    compile_args = ["-O3"] + NO_DEBUG_COMPILE + (OPENMP_CFLAGS if use_openmp else [])
    link_args = NO_DEBUG_LINK + (OPENMP_LDFLAGS if use_openmp else [])
    exts = []
    for pyx in sorted((HERE / CYTHON_DIR).glob("*.pyx")):
        rel = pyx.relative_to(HERE)
        exts.append(
            Extension(
                "fastrec.kernels._cython." + pyx.stem,
                [str(rel)],
                depends=[
                    str(h.relative_to(HERE))
                    for h in sorted((HERE / CYTHON_DIR).glob("*.h"))
                    + sorted((HERE / CYTHON_DIR).glob("*.pxi"))
                    if h.suffix == ".h" or pyx.stem.startswith(h.stem)  # _als*.pyx: _als.pxi
                ],
                include_dirs=[np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
            )
        )
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


class BuildExt(build_ext):
    """build_ext that compiles the modules in parallel and says which one it is on."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extension(self, ext):
        print(
            f"fastrec build: compiling {ext.name} (C compiler, up to a minute each)",
            file=sys.stderr,
            flush=True,
        )
        super().build_extension(ext)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
