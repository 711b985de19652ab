"""Data sets: MNIST from a Keras-layout npz, seed 000's height/weight table, images from a folder
or an npz (aebench.data.images), and synthetic examples drawn in NumPy.

Where MNIST is looked for, in order: the ``--data`` path, the ``AEBENCH_MNIST`` environment
variable, Keras' cache (``$KERAS_HOME/datasets/mnist.npz``, default ``~/.keras``), then the
real MNIST subset shipped inside aebench (the first 10,000 training and 2,000 test images),
so the main job runs offline. Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import importlib.resources
import math
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional
from urllib.error import HTTPError

import numpy as np

from aebench.data.images import image_split_sizes, read_images
from aebench.deadline import within
from aebench.errors import AebenchError, DataError
from aebench.spec.memory import SHIPPED_MNIST_EXAMPLES, least_sizes
from aebench.spec.types import HeightWeight, Images, Mnist, Spec, Synthetic

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
MNIST_ENV = "AEBENCH_MNIST"
MNIST_MAX_BYTES = 64 << 20
"""fetch-mnist stops reading past this (the MNIST npz is 11 MB)."""
_CHUNK = 1 << 16
_MNIST_LAYOUT = {"x_train": (28, 28), "y_train": (), "x_test": (28, 28), "y_test": ()}


@dataclass(frozen=True)
class Dataset:
    """A train/test split in float64, examples shaped as the spec's data; integer labels
    where the data has them. ``feature_names``: what each column of a table is (axis labels
    of its figures); empty for images."""

    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]
    source: str
    feature_names: tuple[str, ...] = ()


def keras_cache_path() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


def bundled_mnist_path() -> Path:
    return Path(str(importlib.resources.files("aebench.bundled"))) / "mnist_subset.npz"


def find_mnist(explicit: Optional[str | Path] = None) -> Path:
    """The MNIST file to use: explicit path, then $AEBENCH_MNIST, the Keras cache, the bundled subset."""
    for origin, candidate in (("--data", explicit), (MNIST_ENV, os.environ.get(MNIST_ENV))):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise DataError(f"{origin}: no MNIST file at {path}; expected a Keras-layout mnist.npz")
            return path
    cached = keras_cache_path()
    return cached if cached.is_file() else bundled_mnist_path()


def read_mnist_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-layout mnist.npz, checked; DataError naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            check_npz_size(path, npz)
            arrays = {key: npz[key] for key in _MNIST_LAYOUT if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable npz file ({type(exc).__name__}: {str(exc)[:200]})") from None
    for key, shape in _MNIST_LAYOUT.items():
        if key not in arrays:
            raise DataError(f"{path}: {key}: missing; a Keras-layout mnist.npz holds {', '.join(_MNIST_LAYOUT)}")
        if arrays[key].ndim != 1 + len(shape) or arrays[key].shape[1:] != shape or arrays[key].dtype != np.uint8:
            raise DataError(
                f"{path}: {key}: expected uint8 of shape (N, {', '.join(map(str, shape))}), "
                f"got {arrays[key].dtype} {arrays[key].shape}"
            )
        if len(arrays[key]) == 0:
            raise DataError(f"{path}: {key}: holds no examples")
    return arrays


MAX_NPZ_MEMBERS = 16  # a Keras-layout mnist.npz holds 4 arrays
MAX_NPZ_BYTES = 1 << 30  # uncompressed; the full MNIST is 55 MB, so 1 GiB refuses only a bomb


def check_npz_size(path: Path, npz: object) -> None:
    """DataError when an npz holds more members or more uncompressed bytes than MNIST could
    (a zip bomb is refused before anything is expanded)."""
    members = getattr(npz, "zip", None)
    infos = members.infolist() if members is not None else []
    if len(infos) > MAX_NPZ_MEMBERS:
        raise DataError(f"{path}: holds {len(infos)} arrays; a Keras-layout mnist.npz holds 4")
    size = sum(info.file_size for info in infos)
    if size > MAX_NPZ_BYTES:
        raise DataError(f"{path}: expands to {size / 2**30:.1f} GiB; MNIST is 55 MB (refused, nothing expanded)")


def split_sizes(spec: Spec, mnist_path: Optional[str | Path] = None) -> tuple[int, int]:
    """(training, test) examples load_dataset gives for ``spec``, found without loading them: a
    generated set's sizes, an image folder's or npz's count (images.image_split_sizes), or those
    in the headers of the MNIST file find_mnist picks. Where the file or folder cannot be read
    so, the least data (memory.least_sizes); loading it then says what is wrong."""
    if isinstance(spec.data, (HeightWeight, Synthetic)):
        return spec.data.n_train, spec.data.n_test
    try:
        if isinstance(spec.data, Images):
            return image_split_sizes(spec.data)
        return mnist_examples(find_mnist(mnist_path))
    except DataError:
        return least_sizes(spec)


def check_data(spec: Spec, mnist_path: Optional[str | Path] = None) -> None:
    """DataError now (before a framework loads) where the spec's data cannot be found: no MNIST file
    at ``mnist_path``, or an image path that is missing, unreadable or holds too few images."""
    if isinstance(spec.data, Mnist):
        find_mnist(mnist_path)
    elif isinstance(spec.data, Images):
        image_split_sizes(spec.data)


def with_data_path(spec: Spec, path: Optional[str]) -> Spec:
    """``spec`` reading its data from ``path`` (``aebench train --data``): an MNIST spec is unchanged
    (``path`` is its MNIST file, passed to load_dataset), an images spec reads ``path`` instead of
    its data.path, and a synthetic spec of images [H, W, C] becomes an images spec of ``path`` of
    that size and channels (no centre crop, the default test_fraction). AebenchError for data
    aebench generates that no file can stand for (the table, flat synthetic examples)."""
    data = spec.data
    if not path or isinstance(data, Mnist):
        return spec
    if isinstance(data, Images):
        return spec.replace(data=dataclasses.replace(data, path=path))
    if isinstance(data, Synthetic) and len(data.shape) == 3:
        height, width, channels = data.shape
        return spec.replace(data=Images("images", path, (height, width), channels))
    what = "flat synthetic examples" if isinstance(data, Synthetic) else f"{data.name} data"
    raise AebenchError(
        f"--data: {spec.name} trains on {what}, which aebench generates; --data applies to mnist "
        "specs (the MNIST npz), images specs (a folder or npz) and synthetic specs of images [H, W, C]"
    )


_UNREADABLE_HEADER = (OSError, ValueError, KeyError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile)


def mnist_examples(path: Path) -> tuple[int, int]:
    """(training, test) examples of the Keras-layout mnist.npz ``path``, read from the headers of
    its x_train and x_test (nothing is expanded); SHIPPED_MNIST_EXAMPLES where they cannot be read,
    or the file is one read_mnist_npz refuses for its size (check_npz_size)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_NPZ_MEMBERS or sum(info.file_size for info in infos) > MAX_NPZ_BYTES:
                return SHIPPED_MNIST_EXAMPLES
            return _npy_rows(archive, "x_train"), _npy_rows(archive, "x_test")
    except _UNREADABLE_HEADER:
        return SHIPPED_MNIST_EXAMPLES


def _npy_rows(archive: zipfile.ZipFile, key: str) -> int:
    """The first dimension of the array ``key`` of an npz, from its header; ValueError where the
    header is not one of an array of images, or claims more bytes than the member holds."""
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as member:
        major, _ = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(member)
    if len(shape) < 2 or math.prod(shape) * dtype.itemsize > info.file_size:
        raise ValueError(f"{key}: the header does not describe the member")
    return int(shape[0])


def load_dataset(spec: Spec, mnist_path: Optional[str | Path] = None) -> Dataset:
    """The spec's data set, shaped as the spec's input."""
    data = spec.data
    if isinstance(data, HeightWeight):
        return height_weight(data)
    if isinstance(data, Synthetic):
        return synthetic(data)
    if isinstance(data, Images):
        split = read_images(data)
        return Dataset(split.x_train, None, split.x_test, None, split.source)
    return mnist(data, find_mnist(mnist_path))


def mnist(cfg: Mnist, path: Path) -> Dataset:
    arrays = read_mnist_npz(path)
    shape = (784,) if cfg.flatten else (28, 28, 1)

    def images(key: str) -> np.ndarray:
        return arrays[key].reshape(-1, *shape).astype(np.float64) / 255.0

    bundled = path == bundled_mnist_path()
    where = "aebench/bundled/mnist_subset.npz (the subset shipped with aebench)" if bundled else str(path)
    return Dataset(
        images("x_train"),
        arrays["y_train"].astype(np.int64),
        images("x_test"),
        arrays["y_test"].astype(np.int64),
        f"mnist {where}",
    )


HEIGHT_WEIGHT_FEATURES = ("height (cm, standardised)", "weight (kg, standardised)")


def height_weight(cfg: HeightWeight) -> Dataset:
    """Seed 000's heights (cm) and weights (kg): weight = height - 105 plus a little scatter.

    Heights ~ N(175, 12), scatter ~ N(0, 3), from ``cfg.seed``; standardised with the
    training split's mean and standard deviation.
    """
    rng = np.random.default_rng(cfg.seed)
    height = rng.normal(175.0, 12.0, cfg.n_train + cfg.n_test)
    weight = height - 105.0 + rng.normal(0.0, 3.0, height.shape)
    table = np.stack([height, weight], axis=1)
    train, test = table[: cfg.n_train], table[cfg.n_train :]
    mean, sd = train.mean(axis=0), train.std(axis=0)
    return Dataset(
        (train - mean) / sd,
        None,
        (test - mean) / sd,
        None,
        f"height_weight seed {cfg.seed} (standardised: mean {mean.round(2).tolist()}, sd {sd.round(2).tolist()})",
        HEIGHT_WEIGHT_FEATURES,
    )


def synthetic(cfg: Synthetic) -> Dataset:
    """n_train + n_test examples of ``cfg.shape`` drawn i.i.d. uniform in [0, 1) by NumPy's
    default_rng(seed) in one draw: the first n_train train, the rest test (so n_test does not
    change the training examples). No labels; the source says the data is synthetic."""
    rng = np.random.default_rng(cfg.seed)
    x = rng.random((cfg.n_train + cfg.n_test, *cfg.shape))
    shape = "x".join(map(str, cfg.shape))
    source = (
        f"synthetic uniform [0, 1) noise (no data set read), seed {cfg.seed}: {cfg.n_train} training and "
        f"{cfg.n_test} test examples of shape {shape}"
    )
    return Dataset(x[: cfg.n_train], None, x[cfg.n_train :], None, source)


def one_hot(labels: Optional[np.ndarray], num_classes: int) -> Optional[np.ndarray]:
    """Labels as one-hot rows of ``num_classes`` (None without labels); DataError when a label
    does not fit (model.conditioning.num_classes fewer than the data's classes)."""
    if labels is None:
        return None
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"model.conditioning.num_classes: {num_classes} classes, but the data's labels run from "
            f"{labels.min()} to {labels.max()}; allowed: at least {labels.max() + 1}"
        )
    rows = np.zeros((len(labels), num_classes))
    rows[np.arange(len(labels)), labels] = 1.0
    return rows


def fetch_mnist(dest: Optional[Path] = None, url: str = MNIST_URL, timeout: float = 10.0) -> Path:
    """Download MNIST to ``dest`` (default: the Keras cache), checking its sha256.

    Only http:// and https:// URLs (redirects included) are followed; the whole download, host
    name lookup and connecting included, must end within ``timeout`` seconds and stay under
    MNIST_MAX_BYTES. It is streamed to a temporary file beside ``dest`` that replaces ``dest`` only once its
    sha256 is right, so a failed download leaves nothing behind. Any failure is a one-line
    DataError that says where to put the file instead.
    """
    dest = Path(dest) if dest else keras_cache_path()
    if not is_http_url(url):
        raise DataError(f"--url: {_cut(url)!r} is not allowed; {_ALLOWED_URLS}")
    deadline = time.monotonic() + timeout
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"could not write MNIST to {_cut(str(dest))} ({exc.strerror or exc}); {_advice()}") from None
    try:
        digest = _download_by_deadline(url, fd, Path(part), deadline, timeout)
        if digest != MNIST_SHA256:
            raise DataError(f"download from {_cut(url)} has sha256 {digest}, expected {MNIST_SHA256}; {_advice()}")
        os.replace(part, dest)
    except OSError as exc:
        raise DataError(f"could not write MNIST to {_cut(str(dest))} ({exc.strerror or exc}); {_advice()}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
    return dest


_ALLOWED_URLS = "allowed: http:// or https:// URLs with a host"


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an http:// or https:// URL with a host (the only ones fetch_mnist follows)."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an invalid port or IPv6 literal
        return False


def _download_by_deadline(url: str, fd: int, part: Path, deadline: float, timeout: float) -> str:
    """_download into the open file ``fd``, waited for until ``deadline`` (aebench.deadline).

    Socket reads and connects already end at the deadline; the wait bounds what they cannot,
    above all the host name lookup (getaddrinfo blocks and takes no timeout). A lookup still
    hanging is left behind in its daemon thread, writing, if ever, into a removed file.
    """

    def download() -> str:
        with os.fdopen(fd, "wb") as out:
            return _download(url, out, deadline, timeout)

    def late() -> BaseException:
        return _network_error(TimeoutError(), url, timeout, part.stat().st_size if part.exists() else 0)

    seconds = max(deadline - time.monotonic(), 0) + _DEADLINE_GRACE_S
    return within(seconds, download, late, name="aebench-fetch-mnist")


_DEADLINE_GRACE_S = 0.25
"""How long past the deadline the download thread may take to raise its own timeout, which
says how many bytes were read, before the waiting thread gives up on it."""


def _download(url: str, out: IO[bytes], deadline: float, timeout: float) -> str:
    """Stream ``url`` into ``out`` until ``deadline``; the sha256 of what was read."""
    digest, size = hashlib.sha256(), 0
    try:
        with _open(url, deadline) as (response, sockets):
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MNIST_MAX_BYTES:
                raise DataError(
                    f"download from {_cut(url)} announces {int(declared) >> 20} MB, {_TOO_BIG}; {_advice()}"
                )
            while chunk := _read_before(response, sockets, deadline):
                size += len(chunk)
                if size > MNIST_MAX_BYTES:
                    raise DataError(f"download from {_cut(url)} stopped: {_TOO_BIG}; {_advice()}")
                digest.update(chunk)
                out.write(chunk)
    except (http.client.HTTPException, OSError) as exc:  # URLError and TimeoutError are OSErrors
        raise _network_error(exc, url, timeout, size) from None
    return digest.hexdigest()


_TOO_BIG = f"more than {MNIST_MAX_BYTES >> 20} MB (MNIST is 11 MB)"


def _network_error(exc: Exception, url: str, timeout: float, size: int) -> DataError:
    """The one line for a failed download: the deadline passed, or why the server could not be read."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(exc, HTTPError) else exc
    if isinstance(reason, TimeoutError):
        return DataError(
            f"download from {_cut(url)} timed out: it did not finish within {timeout:g} s (--timeout), "
            f"{size:,} bytes read; {_advice()}"
        )
    return DataError(f"could not download MNIST from {_cut(url)} ({_cut(str(reason))}); {_advice()}")


def _read_before(response: http.client.HTTPResponse, sockets: list[socket.socket], deadline: float) -> bytes:
    """The next bytes the server sends (at most _CHUNK), waiting no longer than ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    for connected in sockets:
        connected.settimeout(left)
    return response.read1(_CHUNK)


@contextlib.contextmanager
def _open(url: str, deadline: float) -> Iterator[tuple[http.client.HTTPResponse, list[socket.socket]]]:
    """The response to a GET of ``url`` (proxies from the environment, http(s) redirects only)
    and the sockets it reads from, whose timeouts the caller shortens to the deadline."""
    sockets: list[socket.socket] = []
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _DeadlineHTTPHandler(sockets),
        _DeadlineHTTPSHandler(sockets),
        urllib.request.HTTPDefaultErrorHandler(),
        _HTTPOnlyRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    request = urllib.request.Request(url, headers={"User-Agent": "aebench", "Accept-Encoding": "identity"})
    with opener.open(request, timeout=max(deadline - time.monotonic(), 0.001)) as response:
        yield response, sockets


class _HTTPOnlyRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Redirects to http:// and https:// only (urllib also follows ftp://, and refuses file://
    with a message that does not say what is allowed)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = urllib.parse.urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if not is_http_url(target):
            where = f"{_cut(req.full_url)} answered with a redirect to {_cut(target)!r}"
            raise DataError(f"--url: {where}; {_ALLOWED_URLS}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _recording(connection_class: type[http.client.HTTPConnection], sockets: list[socket.socket]) -> Callable:
    """A connection factory for urllib that keeps each connected socket in ``sockets``."""

    class Recording(connection_class):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            super().connect()
            sockets.append(self.sock)

    return Recording


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    """urllib's http:// handler, keeping each connection's socket so every read gets only the time left."""

    def __init__(self, sockets: list[socket.socket]):
        super().__init__()
        self.sockets = sockets

    def http_open(self, req):
        return self.do_open(_recording(http.client.HTTPConnection, self.sockets), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's https:// handler, keeping each connection's socket so every read gets only the time left."""

    def __init__(self, sockets: list[socket.socket]):
        super().__init__()
        self.sockets = sockets

    def https_open(self, req):
        return self.do_open(_recording(http.client.HTTPSConnection, self.sockets), req, context=self._context)


def _cut(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters, so a hostile value cannot flood a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _advice() -> str:
    return (
        f"put a Keras-layout mnist.npz (sha256 {MNIST_SHA256[:12]}...) at {keras_cache_path()}, "
        f"or pass --data PATH, or set {MNIST_ENV}"
    )
