import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def sim(request):
    """One running simulator per test module, of the module's ``CFG`` on its
    ``SIMULATOR`` (Verilator unless the module says otherwise)."""
    from cosim.rtlsim import RtlSim
    with RtlSim(request.module.CFG, getattr(request.module, "SIMULATOR", "verilator")) as s:
        yield s
