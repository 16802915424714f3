"""uint8 face arrays <-> float [0, 1] face tensors: shapes, layouts and rounding."""

from __future__ import annotations

import numpy as np
import torch

from antimask.faces.images import to_float, to_uint8


def test_uint8_faces_survive_the_round_trip_exactly():
    faces = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    faces[0, 0, :2] = [[0, 0, 0], [255, 255, 255]]
    x = to_float(faces)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255.0))
    assert np.array_equal(to_uint8(x), faces)
    assert np.array_equal(to_uint8(to_float(faces[1])), faces[1])  # one face (S, S, 3)
    assert to_float(faces[1]).shape == (3, 16, 16)
    flipped = faces[:, :, ::-1]  # a strided view, as a flipped loader face is
    assert np.array_equal(to_uint8(to_float(flipped)), flipped)


def test_float_arrays_are_taken_as_already_in_zero_to_one():
    faces = np.random.default_rng(1).random((2, 8, 8, 3))
    assert torch.equal(to_float(faces), torch.from_numpy(faces.astype(np.float32)).permute(0, 3, 1, 2))


def test_to_uint8_clamps_rounds_half_to_even_and_returns_contiguous_arrays():
    x = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0, 7.0], dtype=torch.float64)
    image = x.view(1, 1, 7).expand(3, 1, 7)  # (3, H, W)
    out = to_uint8(image)
    assert out.shape == (1, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert out[0, :, 0].tolist() == [0, 0, 0, 2, 254, 255, 255]
    assert np.array_equal(to_uint8(image.half()), to_uint8(image.half().float()))  # rounded in float32
