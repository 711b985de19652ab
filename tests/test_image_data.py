"""Image data (a folder of PNG/JPEG files or an npz, read with Pillow) and synthetic data: small
images generated here, how they are converted, cropped, resized, scaled and split, the one line a
bad file gives, and one epoch of a synthetic RGB spec through ``aebench train`` (about 6 s, the
import of torch most of it; the rest takes about a second)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from aebench.bench.identity import data_setting
from aebench.cli.main import main
from aebench.data.datasets import load_dataset, split_sizes, with_data_path
from aebench.data.images import image_split_sizes, images_digest, split_counts
from aebench.errors import AebenchError, DataError, SpecError
from aebench.spec.load import load_spec
from aebench.spec.memory import memory_need
from aebench.spec.shapes import plan_model
from aebench.spec.types import Images
from aebench.train.images import reconstructions_figure

WIDTH, HEIGHT = 10, 8
FILES = 12

SPEC = """
model:
  family: vae
  encoder: {encoder}
  latent: {{size: 2}}
  decoder:
    - {{type: dense, units: {units}}}
    - {{type: reshape, shape: {shape}}}
  output_activation: sigmoid
loss:
  reconstruction: {{kind: bce, weight: 1.0, features: sum, batch: mean}}
  kl: {{beta: 1.0, features: sum, batch: mean}}
data: {data}
init: {{kernel: glorot_uniform, bias: zeros}}
optimizer: {{name: adam, learning_rate: 1.0e-3, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-8}}
train: {{batch_size: 8, epochs: 1, seed: 0}}
dtype: float32
"""


CONV = "[{type: conv, filters: 4, kernel: 2, stride: 2, padding: same, activation: relu}, {type: flatten}]"
DENSE = "[{type: dense, units: 4, activation: relu}]"


def write_spec(folder: Path, data: str, shape: tuple[int, ...] = (8, 8, 3), encoder: str = CONV) -> Path:
    """A tiny VAE spec (by default a conv and flatten encoder) on ``data`` whose decoder gives ``shape``."""
    path = folder / "tiny.yaml"
    path.write_text(SPEC.format(data=data, units=math.prod(shape), shape=list(shape), encoder=encoder))
    return path


def images_spec(path: Path, size=(HEIGHT, WIDTH), channels: int = 3, extra: str = "") -> str:
    return f"{{name: images, path: '{path}', size: [{size[0]}, {size[1]}], channels: {channels}{extra}}}"


def pixels(seed: int, mode: str = "RGB", size=(WIDTH, HEIGHT)) -> np.ndarray:
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_images(folder: Path) -> dict[str, np.ndarray]:
    """FILES images of WIDTH x HEIGHT: RGB and grayscale PNGs and JPEGs; the pixels of each PNG by name."""
    folder.mkdir(exist_ok=True)
    written = {}
    for i in range(FILES):
        mode = "L" if i % 3 == 1 else "RGB"
        name = f"img{i:02d}.{'jpg' if i % 4 == 3 else 'png'}"
        array = pixels(i, mode)
        Image.fromarray(array).save(folder / name)
        if name.endswith(".png"):
            written[name] = array
    return written


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, what Pillow's convert('L') computes (to within its rounding)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def pillow_bilinear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of Pillow's bilinear resize: the triangle filter centred on each output
    pixel, its support widened by the scale when shrinking, each row normalised."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        for j in range(max(int(centre - stretch + 0.5), 0), min(int(centre + stretch + 0.5), n_in)):
            weights[i, j] = max(0.0, 1.0 - abs((j - centre + 0.5) / stretch))
        weights[i] /= weights[i].sum()
    return weights


def load(spec_path: Path):
    return load_dataset(load_spec(spec_path))


def test_a_folder_of_rgb_and_grayscale_pngs_and_jpegs_is_read_and_split_in_name_order(tmp_path: Path) -> None:
    written = write_images(tmp_path / "faces")
    spec = load_spec(write_spec(tmp_path, images_spec(tmp_path / "faces", extra=", test_fraction: 0.25"), (8, 10, 3)))
    data = load_dataset(spec)
    assert data.x_train.shape == (9, HEIGHT, WIDTH, 3) and data.x_test.shape == (3, HEIGHT, WIDTH, 3)
    assert data.y_train is None and data.x_train.dtype == np.float64
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert split_sizes(spec) == (9, 3)
    # PNGs of the spec's size are the pixels / 255 exactly; the test split is the last 3 by name
    assert np.array_equal(data.x_train[0], written["img00.png"] / 255.0)
    assert np.array_equal(data.x_test[0], written["img09.png"] / 255.0)
    gray = data.x_train[1]  # img01.png, an L image converted to RGB: three equal channels
    assert np.array_equal(gray, np.repeat(written["img01.png"][..., None] / 255.0, 3, axis=2))
    assert data.source.startswith(f"images {tmp_path / 'faces'}: 12 PNG/JPEG files, RGB")
    assert "test split: the last 3 in sorted file-name order" in data.source


def test_one_channel_is_pillows_luma(tmp_path: Path) -> None:
    written = write_images(tmp_path / "faces")
    data = load(write_spec(tmp_path, images_spec(tmp_path / "faces", channels=1), (8, 10, 1)))
    assert data.x_train.shape == (10, HEIGHT, WIDTH, 1)
    assert np.abs(data.x_train[0, ..., 0] - luma(written["img00.png"].astype(float)) / 255.0).max() <= 1 / 255


def test_centre_crop_is_torchvisions_and_the_resize_pillows_bilinear(tmp_path: Path) -> None:
    """A 9x8 image cropped to 4: left = round(5 / 2) = 2 (half to even, as torchvision), top = 2;
    then shrunk to 2x2 with Pillow's bilinear filter, computed here in NumPy."""
    folder = tmp_path / "two"
    folder.mkdir()
    arrays = [pixels(seed, size=(9, 8)) for seed in (1, 2)]
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"{i}.png")
    crop = load(
        write_spec(tmp_path, images_spec(folder, (4, 4), extra=", center_crop: 4, test_fraction: 0.5"), (4, 4, 3))
    )
    assert np.array_equal(crop.x_train[0], arrays[0][2:6, 2:6] / 255.0)
    resized = load(
        write_spec(tmp_path, images_spec(folder, (2, 2), extra=", center_crop: 4, test_fraction: 0.5"), (2, 2, 3))
    )
    weights = pillow_bilinear(4, 2)
    for got, array in zip((resized.x_train[0], resized.x_test[0]), arrays):
        expected = np.einsum("ij,jkc,lk->ilc", weights, array[2:6, 2:6].astype(float), weights) / 255.0
        assert np.abs(got - expected).max() <= 1 / 255 + 1e-12  # Pillow rounds to 8 bits after each pass


def test_pillows_bilinear_weights_shrink_by_two_as_stated() -> None:
    assert np.allclose(pillow_bilinear(4, 2), np.array([[3, 3, 1, 0], [0, 1, 3, 3]]) / 7)


def test_an_image_smaller_than_the_crop_is_named(tmp_path: Path) -> None:
    write_images(tmp_path / "faces")
    spec = write_spec(tmp_path, images_spec(tmp_path / "faces", (4, 4), extra=", center_crop: 9"), (4, 4, 3))
    with pytest.raises(DataError, match=r"img00.png: is 10x8 \(width x height\), smaller than data.center_crop 9"):
        load(spec)


def test_npz_with_its_own_split_or_one_array_split_by_the_fraction(tmp_path: Path) -> None:
    train, test = pixels(1, "L", (6, 5 * 4))[:, :6].reshape(4, 5, 6), pixels(2, "L", (6, 10))[:, :6].reshape(2, 5, 6)
    np.savez(tmp_path / "keras.npz", x_train=train, x_test=test, y_train=np.arange(4))
    data = load(write_spec(tmp_path, images_spec(tmp_path / "keras.npz", (5, 6), channels=1), (5, 6, 1)))
    assert np.array_equal(data.x_train[..., 0], train / 255.0) and np.array_equal(data.x_test[..., 0], test / 255.0)
    assert "test split: the file's x_test" in data.source and data.y_train is None
    rgba = np.random.default_rng(3).integers(0, 256, (10, 5, 6, 4), dtype=np.uint8)
    np.savez(tmp_path / "one.npz", images=rgba)
    spec = load_spec(
        write_spec(tmp_path, images_spec(tmp_path / "one.npz", (5, 6), extra=", test_fraction: 0.3"), (5, 6, 3))
    )
    assert split_sizes(spec) == (7, 3)
    data = load_dataset(spec)
    assert np.array_equal(data.x_test, rgba[7:, ..., :3] / 255.0)  # the alpha channel is dropped


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((2, 5, 6), np.float32), "x_test": np.zeros((1, 5, 6), np.uint8)}, "x_train: is float32"),
        ({"images": np.zeros((4, 5, 6, 2), np.uint8)}, "images: is uint8 of shape (4, 5, 6, 2); allowed: uint8"),
        ({"labels": np.zeros(3, np.uint8)}, "holds labels; allowed: an npz holding x_train and x_test"),
    ],
)
def test_an_npz_of_the_wrong_layout_is_one_line(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    spec = write_spec(tmp_path, images_spec(tmp_path / "bad.npz", (5, 6)), (5, 6, 3))
    with pytest.raises(DataError) as caught:
        load(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_split_counts_take_the_fraction_as_written() -> None:
    assert split_counts(10, 0.3, Path("f")) == (7, 3)  # 10 * 0.3 is 3.0000000000000004 in binary
    assert split_counts(12, 0.1, Path("f")) == (10, 2)
    with pytest.raises(DataError, match="holds 1 image.*allowed: at least 2 images"):
        split_counts(1, 0.1, Path("f"))
    with pytest.raises(DataError, match="allowed: at least 10 images"):
        split_counts(5, 0.9, Path("f"))


def truncated_png(path: Path) -> None:
    Image.fromarray(pixels(0)).save(path)
    path.write_bytes(path.read_bytes()[:60])


def gif(path: Path) -> None:
    Image.fromarray(pixels(0)).save(path, format="GIF")


@pytest.mark.parametrize(
    "make, message",
    [
        (truncated_png, "zz.png: not a readable PNG or JPEG image"),
        (lambda p: p.write_text("not an image"), "zz.png: not a readable PNG or JPEG image (UnidentifiedImageError"),
        (gif, "zz.png: not a readable PNG or JPEG image"),
        (lambda p: p.mkdir(), "zz.png: is not a regular file"),
        (lambda p: os.mkfifo(p), "zz.png: is not a regular file"),
        (lambda p: p.symlink_to(p.parent), "zz.png: is not a regular file"),
    ],
    ids=["truncated", "text", "gif", "folder", "fifo", "link-to-folder"],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, make, message: str) -> None:
    write_images(tmp_path / "faces")
    make(tmp_path / "faces" / "zz.png")
    with pytest.raises(DataError) as caught:
        load(write_spec(tmp_path, images_spec(tmp_path / "faces"), (8, 10, 3)))
    assert message in str(caught.value) and "allowed: PNG or JPEG files" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_files_hidden_files_and_links_to_images(tmp_path: Path) -> None:
    written = write_images(tmp_path / "faces")
    (tmp_path / "faces" / "README.txt").write_text("not read")
    (tmp_path / "faces" / ".zz.png").write_text("hidden: not read")
    (tmp_path / "faces" / "sub").mkdir()
    (tmp_path / "faces" / "zz.PNG").symlink_to(tmp_path / "faces" / "img00.png")
    data = load(write_spec(tmp_path, images_spec(tmp_path / "faces", extra=", test_fraction: 0.1"), (8, 10, 3)))
    assert len(data.x_train) + len(data.x_test) == FILES + 1
    assert np.array_equal(data.x_test[-1], written["img00.png"] / 255.0)  # the link, last by name


def test_a_bad_file_through_the_cli_is_exit_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "faces")
    truncated_png(tmp_path / "faces" / "zz.png")
    spec = write_spec(tmp_path, images_spec(tmp_path / "faces"), (8, 10, 3))
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"aebench: error: {tmp_path / 'faces' / 'zz.png'}: not a readable")


def test_an_empty_or_missing_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    with pytest.raises(DataError, match="empty: holds no image files .*allowed: a folder of PNG or JPEG files"):
        load(write_spec(tmp_path, images_spec(tmp_path / "empty"), (8, 10, 3)))
    with pytest.raises(DataError, match="data.path: nothing at .*missing; allowed: a folder of PNG or JPEG"):
        image_split_sizes(Images("images", str(tmp_path / "missing"), (8, 8), 3))


@pytest.mark.parametrize(
    "data, message",
    [
        ("{name: images, path: x, size: [8, 8], channels: 2}", "data.channels: must be one of 1, 3; got 2"),
        ("{name: images, path: x, size: [8, 0], channels: 3}", "data.size: each side must lie in 1..32768"),
        ("{name: images, path: '', size: [8, 8], channels: 3}", "data.path: must be the path of a folder"),
        (
            "{name: images, path: x, size: [8, 8], channels: 3, test_fraction: 1}",
            "data.test_fraction: must lie in (0, 1)",
        ),
        ("{name: synthetic, shape: [8, 8, 2]}", "data.shape: must be [D] (flat) or [H, W, C] with C 1 or 3"),
        ("{name: synthetic, shape: [8, 8]}", "data.shape: must be [D] (flat) or [H, W, C]"),
        (
            "{name: synthetic, shape: [8, 8, 1]}",
            "model.decoder: outputs shape (8, 8, 3) but the data (synthetic) has shape (8, 8, 1)",
        ),
    ],
)
def test_wrong_channels_and_shapes_are_spec_errors(tmp_path: Path, data: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, data))
    assert message in str(caught.value), str(caught.value)


def test_an_npz_of_two_channels_or_a_folder_for_one_channel_data_is_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", x_train=np.zeros((2, 8, 8, 2), np.uint8), x_test=np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(DataError, match=r"two.npz: x_train: is uint8 of shape \(2, 8, 8, 2\); allowed"):
        load(write_spec(tmp_path, images_spec(tmp_path / "two.npz", (8, 8))))


def test_conditioning_needs_labels_which_images_and_synthetic_data_lack(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "{name: synthetic, shape: [6]}", (6,), DENSE)
    path.write_text(path.read_text().replace("family: vae", "family: vae\n  conditioning: {labels: true}"))
    with pytest.raises(SpecError, match=r"model.conditioning: needs labelled data \(mnist\); synthetic has no labels"):
        load_spec(path)


def test_synthetic_data_is_deterministic_and_says_it_is_synthetic(tmp_path: Path) -> None:
    first = load(write_spec(tmp_path, "{name: synthetic, shape: [8, 8, 3], n_train: 20, n_test: 5, seed: 7}"))
    again = load(write_spec(tmp_path, "{name: synthetic, shape: [8, 8, 3], n_train: 20, n_test: 9, seed: 7}"))
    other = load(write_spec(tmp_path, "{name: synthetic, shape: [8, 8, 3], n_train: 20, n_test: 5, seed: 8}"))
    assert first.x_train.shape == (20, 8, 8, 3) and first.x_test.shape == (5, 8, 8, 3)
    assert np.array_equal(first.x_train, again.x_train)  # n_test does not change the training examples
    assert np.array_equal(first.x_test, again.x_test[:5]) and not np.array_equal(first.x_train, other.x_train)
    assert 0.0 <= first.x_train.min() and first.x_train.max() < 1.0 and first.y_train is None
    assert first.source.startswith("synthetic uniform [0, 1) noise (no data set read), seed 7: 20 training")


def test_data_path_overrides_an_images_spec_and_turns_synthetic_images_into_a_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "faces")
    synthetic = load_spec(write_spec(tmp_path, "{name: synthetic, shape: [8, 8, 3]}"))
    folder = with_data_path(synthetic, str(tmp_path / "faces"))
    assert folder.data == Images("images", str(tmp_path / "faces"), (8, 8), 3)
    assert load_dataset(folder).x_train.shape == (10, 8, 8, 3)  # 10x8 files resized to 8x8
    moved = with_data_path(
        load_spec(write_spec(tmp_path, images_spec(tmp_path / "elsewhere"), (8, 10, 3))), str(tmp_path / "faces")
    )
    assert isinstance(moved.data, Images) and moved.data.path == str(tmp_path / "faces")
    flat = load_spec(write_spec(tmp_path, "{name: synthetic, shape: [6]}", (6,), DENSE))
    with pytest.raises(AebenchError, match="--data: tiny trains on flat synthetic examples, which aebench generates"):
        with_data_path(flat, str(tmp_path / "faces"))
    assert with_data_path(synthetic, None) is synthetic


def test_memory_and_bench_identity_see_the_images(tmp_path: Path) -> None:
    write_images(tmp_path / "faces")
    spec = load_spec(write_spec(tmp_path, images_spec(tmp_path / "faces"), (8, 10, 3)))
    need = memory_need(spec, sizes=split_sizes(spec))
    assert need.examples == FILES and need.data_values == FILES * HEIGHT * WIDTH * 3  # no labels
    synthetic = load_spec(write_spec(tmp_path, "{name: synthetic, shape: [8, 8, 3]}"))
    assert data_setting(synthetic, None) == "generated from the spec"
    before = data_setting(spec, None)
    assert before == images_digest(spec.data) and len(before) == 64
    Image.fromarray(pixels(99)).save(tmp_path / "faces" / "img00.png")
    assert images_digest(spec.data) != before


def test_figures_show_rgb_for_three_channels_and_gray_for_one(tmp_path: Path) -> None:
    for channels, coloured in ((3, True), (1, False)):
        spec = load_spec(write_spec(tmp_path, f"{{name: synthetic, shape: [8, 8, {channels}]}}", (8, 8, channels)))
        x = load_dataset(spec).x_test[:10]
        fig = reconstructions_figure({"input": x, "reconstruction": x[::-1]}, plan_model(spec), "heading", ())
        fig.savefig(tmp_path / "figure.png")
        plt.close(fig)
        assert has_colour(tmp_path / "figure.png") == coloured


def has_colour(png: Path) -> bool:
    """Whether a PNG has pixels whose red, green and blue differ (a grayscale figure has none)."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    return bool((rgb.max(axis=2) - rgb.min(axis=2) > 32).any())


def test_a_synthetic_rgb_spec_trains_an_epoch_through_aebench_train(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "{name: synthetic, shape: [8, 8, 3], n_train: 64, n_test: 16, seed: 1}")
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aebench.cli",
            "train",
            str(spec),
            "--backend",
            "torch",
            "--out",
            str(out),
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "data: synthetic uniform [0, 1) noise" in proc.stderr and "Traceback" not in proc.stderr
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["data"].startswith("synthetic") and len(meta["epochs"]) == 2
    assert has_colour(out / "reconstructions.png") and has_colour(out / "samples.png")
    params = json.loads((out / "mlflow_bundle" / "run.json").read_text())
    assert params["params"]["data.name"] == "synthetic" and params["tags"]["dataset"].startswith("synthetic")
