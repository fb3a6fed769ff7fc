"""Shared benchmark set-up: BLAS held to one thread (its busy-waiting threads beside Numba/OpenMP
threads made kernels 3-5x slower on 2 cores), and the synthetic data sets of datasets.py."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield
