"""Image data sets: a folder of PNG/JPEG files or an npz of uint8 images, decoded with Pillow.

Every image goes through the same steps (``prepare``), the torchvision order PyTorch-VAE uses on
CelebA (``CenterCrop(148)``, ``Resize(64)``, ``ToTensor()``):

1. converted with Pillow to ``RGB`` (``channels: 3``) or ``L`` (``channels: 1``, Pillow's ITU-R
   601-2 luma); an alpha channel is dropped, a palette expanded. 16-bit and float images (Pillow
   modes I and F) are refused: the scaling to [0, 1] below is for 8 bits.
2. centre-cropped to a ``center_crop`` square when given, at ``top = round((H - N) / 2)``, ``left
   = round((W - N) / 2)`` (Python's round, half to even), as torchvision's CenterCrop computes it;
   an image smaller than the square is refused (torchvision would pad it with zeros).
3. resized to ``size`` [H, W] with Pillow's ``Image.resize(..., Image.Resampling.BILINEAR)``, which
   widens its support when it shrinks (antialiased): what torchvision's Resize does to a PIL
   image. An image already of that size is copied unchanged. Without ``center_crop`` the whole
   image is resized, its aspect ratio not kept.
4. scaled to float64 in [0, 1] (value / 255), laid out (H, W, C), channels in RGB order.

An EXIF orientation tag is not applied (torchvision's image loader does not apply it either).

A folder: the files directly in it named ``*.png``, ``*.jpg`` or ``*.jpeg`` (any case), hidden names
(``.*``) left out, subfolders not read, links followed, in sorted file-name order; the test split is
the last ceil(N x test_fraction) of them (CelebA's own test partition is its last files). A file
that is not a regular file, is larger than MAX_FILE_BYTES, is not a PNG or JPEG Pillow can decode,
or holds more than MAX_PIXELS pixels is one DataError naming it.

An npz (read with ``allow_pickle=False``): ``x_train`` and ``x_test``, its own split (a Keras-layout
mnist.npz or a CIFAR saved from keras.datasets), or ``images``, split as a folder is; each uint8 of
shape (N, H, W) or (N, H, W, C) with C 1, 3 (RGB) or 4 (RGBA). Other arrays (labels) are not read.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, cast

import numpy as np
from numpy.lib.npyio import NpzFile
from PIL import Image

from aebench.errors import DataError
from aebench.spec.memory import physical_memory_bytes
from aebench.spec.types import Images

SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
RESAMPLE = Image.Resampling.BILINEAR
MAX_FILE_BYTES = 64 << 20  # a 64x64 CelebA JPEG is about 10 kB; a 24-megapixel photo about 15 MB
MAX_PIXELS = 1 << 26  # 67 megapixels, below Pillow's own decompression-bomb limit (89 megapixels)
NPZ_LAYOUTS = (("x_train", "x_test"), ("images",))
NPZ_CHANNELS = (1, 3, 4)  # L, RGB, RGBA
ALLOWED_FILES = "PNG or JPEG files (*.png, *.jpg, *.jpeg) of 8 bits per channel"
ALLOWED_PATH = "a folder of PNG or JPEG files, or an npz holding x_train and x_test, or images"
_DECODE_ERRORS = (
    OSError,  # Pillow's UnidentifiedImageError and "image file is truncated" among them
    SyntaxError,  # Pillow's "broken PNG file" and other malformed chunks
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass(frozen=True)
class ImageSplit:
    """The images of both splits as float64 (N, H, W, C) in [0, 1], and where they came from."""

    x_train: np.ndarray
    x_test: np.ndarray
    source: str


def read_images(cfg: Images) -> ImageSplit:
    """The spec's images, prepared and split (see the module docstring); DataError naming the path
    or the file that cannot be used."""
    path = data_path(cfg)
    if _is_folder(path):
        return _read_folder(cfg, path)
    return _read_npz(cfg, path)


def image_split_sizes(cfg: Images) -> tuple[int, int]:
    """(training, test) images ``cfg`` gives, from the folder's listing or the npz's array headers
    (nothing is decoded); DataError where the path cannot be used or holds too few images."""
    path = data_path(cfg)
    if _is_folder(path):
        return split_counts(len(image_files(path)), cfg.test_fraction, path)
    with _open_npz(path) as npz:
        layout = _npz_layout(path, npz.files)
        rows = [_npz_header(path, npz, key)[0] for key in layout]
    return (rows[0], rows[1]) if len(layout) == 2 else split_counts(rows[0], cfg.test_fraction, path)


def data_path(cfg: Images) -> Path:
    """``cfg.path`` (``~`` expanded, relative to the working directory); DataError when nothing is there."""
    path = Path(cfg.path).expanduser()
    try:
        found = path.exists()
    except (OSError, ValueError):
        found = False
    if not found:
        raise DataError(f"data.path: nothing at {path}; allowed: {ALLOWED_PATH}")
    return path


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (see the module docstring), sorted by name; DataError
    when the folder cannot be listed or holds none."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if _is_image_name(e.name))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list this folder ({exc.strerror or exc}); allowed: {ALLOWED_PATH}") from None
    if not names:
        raise DataError(
            f"{folder}: holds no image files (data.path); allowed: a folder of {ALLOWED_FILES} "
            "(hidden files and subfolders are not read)"
        )
    return [folder / name for name in names]


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(SUFFIXES)


def split_counts(n: int, test_fraction: float, where: Path) -> tuple[int, int]:
    """(training, test) of ``n`` images: the test split is ceil(n x test_fraction), the fraction taken
    as its decimal text (0.3 of 10 is 3); DataError naming ``where`` when no training image is left."""
    fraction = Fraction(repr(test_fraction))
    n_test = math.ceil(n * fraction)
    if n - n_test >= 1:
        return n - n_test, n_test
    least = max(2, math.ceil(1 / (1 - fraction)))
    raise DataError(
        f"{where}: holds {n} image(s); data.test_fraction {test_fraction:g} puts {n_test} in the test split "
        f"and leaves none to train on; allowed: at least {least} images, or a smaller data.test_fraction"
    )


def _read_folder(cfg: Images, folder: Path) -> ImageSplit:
    files = image_files(folder)
    n_train, n_test = split_counts(len(files), cfg.test_fraction, folder)
    x = _prepared(cfg, ((str(f), _decode_file(f)) for f in files), len(files))
    source = (
        f"images {folder}: {len(files)} PNG/JPEG files, {describe(cfg)}; "
        f"test split: the last {n_test} in sorted file-name order"
    )
    return ImageSplit(x[:n_train], x[n_train:], source)


def describe(cfg: Images) -> str:
    """How each image was prepared, for the data set's source: 'RGB, centre crop 148, bilinear to 64x64'."""
    mode = "RGB" if cfg.channels == 3 else "grayscale (L)"
    crop = f", centre crop {cfg.center_crop}" if cfg.center_crop else ""
    return f"{mode}{crop}, bilinear to {cfg.size[0]}x{cfg.size[1]}, scaled to [0, 1]"


def _prepared(cfg: Images, images: Iterable[tuple[str, Image.Image]], n: int) -> np.ndarray:
    """(n, H, W, C) float64 of ``images`` (each named for its errors), each through ``prepare``."""
    height, width = cfg.size
    out = np.empty((n, height, width, cfg.channels))
    for i, (where, image) in enumerate(images):
        out[i] = prepare(image, cfg, where)
    return out


def prepare(image: Image.Image, cfg: Images, where: str) -> np.ndarray:
    """One image as the spec asks: converted, centre-cropped, resized, scaled (module docstring);
    (H, W, C) float64 in [0, 1]. DataError naming ``where`` when the image is smaller than the crop."""
    image = image.convert("RGB" if cfg.channels == 3 else "L")
    if cfg.center_crop:
        image = image.crop(center_crop_box(image.width, image.height, cfg.center_crop, where))
    height, width = cfg.size
    image = image.resize((width, height), RESAMPLE)
    return (np.asarray(image, dtype=np.float64) / 255.0).reshape(height, width, cfg.channels)


def center_crop_box(width: int, height: int, crop: int, where: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred ``crop`` square, placed as torchvision's CenterCrop."""
    if crop > width or crop > height:
        raise DataError(
            f"{where}: is {width}x{height} (width x height), smaller than data.center_crop {crop}; "
            f"allowed: images at least {crop} pixels on each side, or a smaller data.center_crop"
        )
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def _decode_file(path: Path) -> Image.Image:
    """The image in the file ``path``, decoded; DataError naming it when it cannot be."""
    return decode(read_file(path), str(path))


def read_file(path: Path) -> bytes:
    """The bytes of the regular file ``path`` (see _open_regular); DataError naming it past MAX_FILE_BYTES."""
    with _open_regular(path, ALLOWED_FILES) as handle:
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); allowed: {ALLOWED_FILES}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; allowed: {ALLOWED_FILES} up to that size")
    return data


def decode(data: bytes, where: str) -> Image.Image:
    """The PNG or JPEG image in ``data``, fully decoded; DataError naming ``where`` when it is not
    one, is truncated, is 16-bit or float, or holds more than MAX_PIXELS pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_header(image, where)
            image.load()
        except _DECODE_ERRORS as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:160]}"
            raise DataError(f"{where}: not a readable PNG or JPEG image ({reason}); allowed: {ALLOWED_FILES}") from None
    return image


def _check_header(image: Image.Image, where: str) -> None:
    if image.width * image.height > MAX_PIXELS:
        raise DataError(
            f"{where}: {image.width}x{image.height} pixels, more than {MAX_PIXELS:,}; allowed: {ALLOWED_FILES} "
            f"of at most {MAX_PIXELS:,} pixels"
        )
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        raise DataError(f"{where}: a {image.mode} (16-bit or float) image; allowed: {ALLOWED_FILES}")


def _read_npz(cfg: Images, path: Path) -> ImageSplit:
    with _open_npz(path) as npz:
        layout = _npz_layout(path, npz.files)
        arrays = [_npz_images(path, npz, key) for key in layout]
    if len(layout) == 2:
        train, test = (_prepared(cfg, _from_array(path, key, a), len(a)) for key, a in zip(layout, arrays))
        split = "the file's x_test"
    else:
        n_train, n_test = split_counts(len(arrays[0]), cfg.test_fraction, path)
        x = _prepared(cfg, _from_array(path, "images", arrays[0]), len(arrays[0]))
        train, test = x[:n_train], x[n_train:]
        split = f"the last {n_test} of images"
    source = f"images {path}: npz {', '.join(layout)}, {describe(cfg)}; test split: {split}"
    return ImageSplit(train, test, source)


def _from_array(path: Path, key: str, images: np.ndarray) -> Iterator[tuple[str, Image.Image]]:
    """Each uint8 image of an npz array as a Pillow image, named 'PATH: KEY[i]'."""
    single = images.ndim == 3 or images.shape[3] == 1  # Pillow reads (H, W) as L, (H, W, 3) RGB, (H, W, 4) RGBA
    for i, image in enumerate(images):
        yield f"{path}: {key}[{i}]", Image.fromarray(image.reshape(image.shape[:2]) if single else image)


@contextmanager
def _open_npz(path: Path) -> Iterator[NpzFile]:
    """The npz at ``path``, open for the block (a regular file: a FIFO is refused without waiting);
    DataError naming it when it is not a readable npz."""
    with _open_regular(path) as handle:
        try:
            npz = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:160]}"
            raise DataError(f"{path}: not a readable npz file ({reason}); allowed: {ALLOWED_PATH}") from None
        if not isinstance(npz, NpzFile):
            raise DataError(f"{path}: holds one array (an npy), not an npz; allowed: {ALLOWED_PATH}")
        with npz:
            yield npz


def _open_regular(path: Path, allowed: str = ALLOWED_PATH) -> IO[bytes]:
    """``path`` opened for reading (a link is followed); DataError naming it and what is ``allowed``
    when it cannot be read or is not a regular file (a FIFO is opened without waiting, then refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); allowed: {allowed}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path}: is not a regular file (a folder, a FIFO or a device); allowed: {allowed}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _npz_layout(path: Path, names: list[str]) -> tuple[str, ...]:
    for layout in NPZ_LAYOUTS:
        if all(key in names for key in layout):
            return layout
    held = ", ".join(names[:8]) or "no arrays"
    raise DataError(f"{path}: holds {held}; allowed: an npz holding x_train and x_test (its own split), or images")


def _npz_header(path: Path, npz: NpzFile, key: str) -> tuple[int, ...]:
    """The shape of the array ``key``, read from its header (nothing is expanded); DataError naming
    the file and the array unless it is uint8 images that fit this machine's memory."""
    try:
        archive = cast(zipfile.ZipFile, npz.zip)  # None only once the npz is closed
        info = archive.getinfo(f"{key}.npy")
        with archive.open(info) as member:
            major, _ = np.lib.format.read_magic(member)
            header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(member)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: {key}: not a readable array ({type(exc).__name__}: {str(exc)[:160]})") from None
    _check_layout(path, key, shape, dtype)
    if info.file_size > physical_memory_bytes():
        raise DataError(f"{path}: {key}: expands to {info.file_size:,} bytes, more than this machine's memory")
    return tuple(shape)


def _check_layout(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    channels_ok = len(shape) == 3 or (len(shape) == 4 and shape[3] in NPZ_CHANNELS)
    if dtype != np.uint8 or not channels_ok or 0 in shape:
        raise DataError(
            f"{path}: {key}: is {dtype} of shape {tuple(shape)}; allowed: uint8 images of shape (N, H, W) "
            "or (N, H, W, C) with C 1, 3 (RGB) or 4 (RGBA), N >= 1"
        )


def _npz_images(path: Path, npz: NpzFile, key: str) -> np.ndarray:
    _npz_header(path, npz, key)
    try:
        return npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: {key}: not a readable array ({type(exc).__name__}: {str(exc)[:160]})") from None


def images_digest(cfg: Images) -> str:
    """sha256 of what ``cfg`` reads: of the npz file, or of a folder's sorted image names, each with
    its file's sha256 (a bench cell records it; a campaign resumed on other images refuses)."""
    path = data_path(cfg)
    if not _is_folder(path):
        with _open_regular(path) as handle:
            return _sha256(handle)
    digest = hashlib.sha256()
    for file in image_files(path):
        with _open_regular(file, ALLOWED_FILES) as handle:
            digest.update(f"{file.name}\0{_sha256(handle)}\n".encode())
    return digest.hexdigest()


def _sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()
