"""The test helpers of strategies.py do what the op tests rely on: drawn layouts are
what they say (and hold the values they say), float32 copies keep the layout, the
cotangents are read-only and strided, and ``uses_kernels`` fails when a Numba kernel
did not run."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import LAYOUTS, arrays, astype_like, readonly_strided, shapes, uses_kernels, views

import minilm as ml


@given(data=st.data(), layout=st.sampled_from(LAYOUTS))
def test_views_have_the_drawn_layout_and_values(data, layout):
    a = data.draw(arrays(shapes(2, 4, min_side=2)))
    v = data.draw(views(a, [layout]))
    assert v.shape == a.shape and v.dtype == a.dtype
    if layout == "broadcast":
        assert 0 in v.strides and not v.flags.writeable
        axes = tuple(i for i, s in enumerate(v.strides) if s == 0)
        first = a[tuple(slice(0, 1) if i in axes else slice(None) for i in range(a.ndim))]
        np.testing.assert_array_equal(v, np.broadcast_to(first, a.shape))
        return
    np.testing.assert_array_equal(v, a)
    assert v.flags.writeable
    assert v.flags.c_contiguous == (layout == "contiguous")
    if layout == "strided":  # what the view steps over is NaN
        assert np.isnan(v.base).sum() == v.base.size - v.size


@given(data=st.data(), layout=st.sampled_from(LAYOUTS))
def test_astype_like_keeps_the_layout(data, layout):
    a = data.draw(views(data.draw(arrays(shapes(1, 4, min_side=2))), [layout]))
    b = astype_like(a, np.float32)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert [s // 4 for s in b.strides] == [s // 8 for s in a.strides]
    assert b.flags.writeable == a.flags.writeable
    np.testing.assert_array_equal(b, a.astype(np.float32))


def test_readonly_strided_cotangent():
    g = np.arange(6.0).reshape(2, 3)
    v = readonly_strided(g)
    assert not v.flags.writeable and not v.flags.c_contiguous
    np.testing.assert_array_equal(v, g)


def test_uses_kernels_fails_when_the_numba_backend_falls_back():
    nb = ml.get_backend("numba")
    x = np.random.default_rng(0).standard_normal((3, 4))
    with uses_kernels(nb, "softmax") as calls:
        nb.softmax(x, -1)
    assert calls["softmax"] == 1
    with pytest.raises(AssertionError, match=r"\['softmax'\] never ran"):
        with uses_kernels(nb, "softmax"):
            nb.softmax(x, 0)  # not the last dim: the NumPy reference runs
    with pytest.raises(AssertionError, match="no such Numba kernel"):
        with uses_kernels(nb, "softmaks"):
            pass
    with uses_kernels(ml.get_backend("numpy"), "softmax") as calls:  # nothing to check
        ml.get_backend("numpy").softmax(x, -1)
    assert not calls
