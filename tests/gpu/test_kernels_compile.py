"""Every kernels/*.cu compiles with the machine's nvcc for sm_80 and sm_90 (so a kernel that does not
compile fails CI, GPU or not), and through NVRTC as the loader compiles it when CuPy is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import kernels
from tests.gpu.standin import REFERENCES

NVCC = shutil.which("nvcc")
ARCHS = ("80", "90")


def test_every_kernel_file_declares_kernels_with_a_stand_in():
    assert kernels.sources(), "no kernels/*.cu found"
    for src in kernels.sources():
        sigs = kernels.signatures(src)
        assert sigs, f"{src.name}: no extern \"C\" __global__ kernel"
        assert set(sigs) <= set(REFERENCES), f"{src.name}: kernels without a NumPy stand-in"


def test_signatures_are_parsed_as_c_types():
    sig = kernels.signatures()["level_edges"]
    assert sig[0] == ("const int *", "n")
    assert sig[2] == ("int", "has_seq")
    assert sig[-1] == ("unsigned char *", "flags")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("src", kernels.sources(), ids=lambda p: p.name)
def test_nvcc_compiles_for_sm80_and_sm90(src, tmp_path):
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    out = tmp_path / f"{src.stem}.fatbin"
    proc = subprocess.run([NVCC, "--fatbin", *gencode, "-Werror", "all-warnings", "-o", str(out),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed on {src.name}:\n{proc.stderr}"
    assert out.stat().st_size > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_with_the_loader_options(arch):
    """The loader's path (NVRTC through CuPy) needs no GPU to compile; skipped without CuPy."""
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # no CuPy, or no NVRTC library
        pytest.skip(f"NVRTC unavailable ({type(exc).__name__}: {exc})")
    for src in kernels.sources():
        prog = nvrtc.createProgram(src.read_text(), src.name, [], [])
        try:
            nvrtc.compileProgram(prog, [f"-arch=compute_{arch}", *kernels.NVRTC_OPTIONS])
        except Exception as exc:
            pytest.fail(f"NVRTC failed on {src.name}: {exc}\n{nvrtc.getProgramLog(prog)}")
        finally:
            nvrtc.destroyProgram(prog)
