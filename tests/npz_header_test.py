"""An `.npz` whose array header lies about the array's size is refused before numpy allocates."""

import io
import zipfile

import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints


def _npz_with_header(path, shape, payload):
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "<f4", "fortran_order": False, "shape": shape})
    header_size = member.tell()
    member.write(payload)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Transformer/encoder_norm/scale.npy", member.getvalue())
    return header_size


@pytest.mark.parametrize("shape, claimed", [
    ((100_000, 100_000, 100), 4_000_000_000_000),  # 4 TB: a MemoryError in numpy before
    ((3,), 12),  # fewer bytes than the header says: a truncated array
])
def test_a_header_claiming_another_size_is_a_value_error(tmp_path, shape, claimed):
    path = tmp_path / "lying.npz"
    _npz_with_header(path, shape, b"\0" * 8)
    with pytest.raises(ValueError) as error:
        checkpoints.load_npz(keras_vit.ViT("mu/4", image_size=16, num_classes=3), str(path))
    assert str(error.value) == (
        f"{str(path)!r}: array 'Transformer/encoder_norm/scale' cannot be read, the file is "
        f"damaged or truncated (its header says shape {shape} of float32, {claimed} bytes; the "
        "file holds 8)")
