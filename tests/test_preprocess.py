"""Tests of midas_ref.preprocess: ImTransOpt, masks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from hypothesis import example, given, settings
from hypothesis import strategies as st

from midas_ref.errors import CalibrationError, ImageReadError, MidasRefError
from midas_ref.preprocess import (ImTransOptError, apply_im_trans_opt, build_mask, check_mask, read_mask_file,
                                  validate_im_trans_opt)


def naive_im_trans_opt(image: np.ndarray, options) -> np.ndarray:
    """Obviously-correct reference: explicit index loops over the last two axes, one option at a time."""
    out = np.array(image)
    for code in options:
        frames = out.reshape(-1, *out.shape[-2:])
        n_rows, n_cols = frames.shape[1:]
        if code == 3:
            new = np.empty((frames.shape[0], n_cols, n_rows), dtype=out.dtype)
        else:
            new = np.empty_like(frames)
        for f in range(frames.shape[0]):
            for r in range(n_rows):
                for c in range(n_cols):
                    if code == 0:
                        new[f, r, c] = frames[f, r, c]
                    elif code == 1:  # flip left-right: column c comes from column n_cols-1-c
                        new[f, r, c] = frames[f, r, n_cols - 1 - c]
                    elif code == 2:  # flip up-down
                        new[f, r, c] = frames[f, n_rows - 1 - r, c]
                    else:  # transpose
                        new[f, c, r] = frames[f, r, c]
        out = new.reshape(*out.shape[:-2], *new.shape[1:])
    return out


# ------------------------------------------------------------------------------------- apply_im_trans_opt

A = np.arange(12).reshape(3, 4)  # non-square and non-symmetric, so every transform is distinguishable


@pytest.mark.parametrize("options, reference", [
    ([], A), ([0], A), ([1], np.fliplr(A)), ([2], np.flipud(A)), ([3], A.T),
    ([1, 3], np.fliplr(A).T), ([3, 1], np.fliplr(A.T)), ([1, 2], np.rot90(A, 2)),
    ([3, 2], np.rot90(A, 1)),  # flipud(A.T) is a 90° counter-clockwise rotation
])
def test_matches_numpy_reference_ops(options, reference):
    assert np.array_equal(apply_im_trans_opt(A, options), reference)


def test_order_matters_1_then_3_differs_from_3_then_1():
    one_three = apply_im_trans_opt(A, [1, 3])
    three_one = apply_im_trans_opt(A, [3, 1])
    assert one_three.shape == three_one.shape == (4, 3)
    assert not np.array_equal(one_three, three_one)
    # Pixel (row 0, col 0) = 0: [1, 3] sends it to (row 3, col 0); [3, 1] to (row 0, col 2).
    assert one_three[3, 0] == 0 and three_one[0, 2] == 0


def test_three_d_applies_to_each_frame():
    stack = np.stack([A, A + 100, A + 200])
    out = apply_im_trans_opt(stack, [2, 3])
    assert out.shape == (3, 4, 3)
    for k in range(3):
        assert np.array_equal(out[k], np.flipud(stack[k]).T)


def test_returns_contiguous_copy_not_view():
    out = apply_im_trans_opt(A, [3])
    assert out.flags.c_contiguous
    out[0, 0] = -99
    assert A[0, 0] == 0


def test_scalar_and_none_options():
    assert np.array_equal(apply_im_trans_opt(A, 1), np.fliplr(A))
    assert np.array_equal(apply_im_trans_opt(A, None), A)
    assert np.array_equal(apply_im_trans_opt(A, np.array([2], dtype=np.int32)), np.flipud(A))
    assert validate_im_trans_opt(None) == () and validate_im_trans_opt(np.array([3, 1])) == (3, 1)


@pytest.mark.parametrize("bad", [[4], [-1], [1, 5], [1.0], ["1"], [True], "13"])
def test_invalid_option_raises(bad):
    with pytest.raises(ImTransOptError, match="ImTransOpt") as info:
        apply_im_trans_opt(A, bad)
    assert isinstance(info.value, MidasRefError)


def test_minus_one_message_names_fgz_placeholder():
    with pytest.raises(ImTransOptError, match="placeholder"):
        apply_im_trans_opt(A, [-1])


@st.composite
def stacks(draw):
    """Small 2-D or 3-D integer arrays of any (non-square) shape, with distinct values."""
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    return np.arange(int(np.prod(shape))).reshape(shape)


@settings(max_examples=200, deadline=None)
@given(image=stacks(), options=st.lists(st.integers(0, 3), max_size=7))
@example(image=np.arange(6).reshape(2, 3), options=[1, 3, 2, 3])
def test_equals_naive_composition(image, options):
    assert np.array_equal(apply_im_trans_opt(image, options), naive_im_trans_opt(image, options))


def test_four_transposes_or_double_flips_are_identity():
    assert np.array_equal(apply_im_trans_opt(A, [3, 3]), A)
    assert np.array_equal(apply_im_trans_opt(A, [1, 1, 2, 2]), A)


# ---------------------------------------------------------------------------------------------- masks

RAW = np.array([[5, -1, 0, 7],
                [-2, 3, -1, 0],
                [9, -2, 4, 4]], dtype=np.int32)


def test_sentinels_mask_exactly_their_pixels():
    mask = build_mask(RAW, bad_px_intensity=-2, gap_intensity=-1)
    assert mask.dtype == bool and mask.shape == RAW.shape
    assert int(mask.sum()) == 4
    assert np.array_equal(np.argwhere(mask), [[0, 1], [1, 0], [1, 2], [2, 1]])


@pytest.mark.parametrize("not_given", [None, float("nan"), np.float64("nan")])
def test_nan_or_none_sentinel_means_not_given(not_given):
    mask = build_mask(RAW, bad_px_intensity=not_given, gap_intensity=-1)
    assert int(mask.sum()) == 2  # only the two -1 pixels; -2 and 0 pixels stay usable
    assert not build_mask(RAW, bad_px_intensity=not_given, gap_intensity=not_given).any()


def test_one_sentinel_does_not_mask_zeros():
    # The legacy engine's absent key defaulted to 0 and masked every 0 pixel; we don't.
    mask = build_mask(RAW, gap_intensity=-1)
    assert not mask[RAW == 0].any()
    assert int(build_mask(RAW, gap_intensity=0).sum()) == 2


def test_negative_sentinel_does_not_wrap_on_uint16():
    # ACZ's uint16 cast turned -1/-2 into 65535-like hot pixels; a real 65535 must stay unmasked
    raw = np.array([[0, 65535, 65534]], dtype=np.uint16)
    assert int(build_mask(raw, gap_intensity=-1, bad_px_intensity=-2.0).sum()) == 0


def test_non_finite_pixels_are_masked():
    image = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    assert int(build_mask(image).sum()) == 3


def test_stack_masks_pixel_flagged_in_any_frame():
    stack = np.zeros((3, 2, 2))
    stack[1, 0, 1] = -1
    stack[2, 1, 1] = np.nan
    mask = build_mask(stack, gap_intensity=-1)
    assert mask.shape == (2, 2)
    assert np.array_equal(mask, [[False, True], [False, True]])


def test_mask_file_nonzero_is_masked(tmp_path):
    file_mask = np.zeros(RAW.shape, dtype=np.uint8)
    file_mask[2, 3] = 255
    file_mask[0, 0] = 1
    tifffile.imwrite(tmp_path / "mask.tif", file_mask)
    mask = build_mask(RAW, gap_intensity=-1, mask_file=tmp_path / "mask.tif")
    assert int(mask.sum()) == 4
    assert mask[2, 3] and mask[0, 0]


def test_mask_file_shape_mismatch_names_both_shapes(tmp_path):
    tifffile.imwrite(tmp_path / "mask.tif", np.zeros((4, 3), dtype=np.uint8))
    with pytest.raises(ImageReadError, match=r"\(4, 3\).*\(3, 4\)"):
        build_mask(RAW, mask_file=tmp_path / "mask.tif")


def test_mask_array_or_combined_and_shape_checked():
    extra = np.zeros(RAW.shape, dtype=int)
    extra[0, 3] = 1
    assert int(build_mask(RAW, gap_intensity=-1, mask_array=extra).sum()) == 3
    with pytest.raises(ImageReadError, match="shape"):
        build_mask(RAW, mask_array=np.zeros((2, 2)))


def test_missing_mask_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_mask_file(tmp_path / "nope.tif")


def test_mask_transforms_with_image():
    mask = build_mask(RAW, gap_intensity=-1)
    moved = apply_im_trans_opt(mask, [1, 3])
    image = apply_im_trans_opt(RAW, [1, 3])
    assert np.array_equal(moved, image == -1)


def test_check_mask_all_masked_raises():
    with pytest.raises(CalibrationError, match="all 12 pixels are masked"):
        check_mask(np.ones((3, 4), dtype=bool))
    partial = np.zeros((3, 4), dtype=bool)
    partial[0] = True
    assert check_mask(partial) is not None and int(check_mask(partial).sum()) == 4
