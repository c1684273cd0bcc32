import numba
import pytest
from numba.core import caching, config

from hftraining.core.jit import njit_cached


def test_kernels_compile_where_no_cache_can_be_written(monkeypatch):
    # only a locator that finds no cache location, as for a read-only install without a writable home
    ipython = getattr(caching, "IPythonCacheLocator", None) or caching._IPythonCacheLocator
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # public name in recent numba, private in older
    monkeypatch.setattr(impl, "_locator_classes", [ipython])
    if hasattr(config, "CACHE_LOCATOR_CLASSES"):
        monkeypatch.setattr(config, "CACHE_LOCATOR_CLASSES", "")

    def add_one(x):
        return x + 1

    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(add_one)
    assert njit_cached()(add_one)(1) == 2
