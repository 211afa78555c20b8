"""Pack one split of a dataset folder into a single uncompressed, verified ``.tar``.

For copying a training set to a remote GPU machine with a small upload limit.
The tar holds ``<name>/images/<file>``, ``<name>/masks/<stem>.png`` and
``<name>/splits/<split file name>``, so ``tar xf`` gives a folder usable as
``--data`` for ``python -m training train`` (``data.train_split:
splits/<split file name>``).

* Images are copied byte for byte; with ``optimize_jpeg`` JPEGs are transcoded
  losslessly by ``jpegtran -copy none -optimize -progressive`` (same DCT
  coefficients, smaller entropy coding, metadata dropped).
* Masks are written as bilevel PNGs (0/255) of the thresholded mask
  (:func:`streamseg.evaluation.datasets.read_mask`), which is all training
  ever reads of them.
* Verification is part of packing: the written tar is read back, extracted and
  opened with :class:`training.data.PolypFolder`, and every image and mask must
  decode (with the project's own readers,
  :func:`~streamseg.evaluation.datasets.read_image` and
  :func:`~streamseg.evaluation.datasets.read_mask`) to exactly the source's
  arrays. Otherwise nothing is left at the output path.

The tar is reproducible: members in split order, fixed owner and modes, and
modification times taken from the source files.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.data import DatasetError, PolypFolder, read_split

log = logging.getLogger(__name__)

JPEGTRAN_ARGS = ("-copy", "none", "-optimize", "-progressive")
JPEG_SUFFIXES = (".jpg", ".jpeg")
JPEGTRAN_FIX = (
    "--optimize-jpeg needs jpegtran, which is not installed: "
    "apt-get install libjpeg-turbo-progs (or leave out --optimize-jpeg)"
)


class PackError(RuntimeError):
    """Packing failed: jpegtran missing or failing, or the pack is not lossless."""


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack_split` wrote.

    Attributes:
        out: The ``.tar`` file.
        name: The folder at the top of the tar.
        split_file: The source split file (packed as ``<name>/splits/<its name>``).
        count: Image/mask pairs packed (the split's stems).
        source_image_bytes: Size of the source image files.
        source_mask_bytes: Size of the source mask files.
        packed_image_bytes: Size of the packed image files.
        packed_mask_bytes: Size of the packed (bilevel PNG) mask files.
        packed_bytes: Size of the ``.tar`` (headers and padding included).
        transcoded: Images transcoded by jpegtran (0 without ``optimize_jpeg``).
        seconds: Wall time, verification included.
    """

    out: Path
    name: str
    split_file: Path
    count: int
    source_image_bytes: int
    source_mask_bytes: int
    packed_image_bytes: int
    packed_mask_bytes: int
    packed_bytes: int
    transcoded: int
    seconds: float

    @property
    def source_bytes(self) -> int:
        """Source images plus source masks."""
        return self.source_image_bytes + self.source_mask_bytes


def check_target(out: str | Path, name: str | None = None) -> str:
    """The tar's top folder name for ``out`` (``name``, else ``out``'s stem).

    Raises:
        ValueError: ``out`` does not end in ``.tar`` or the name is not a
            single plain folder name.
    """
    out = Path(out)
    if out.suffix.lower() != ".tar":
        raise ValueError(
            f"--out {out}: expected a .tar file name (the pack is an uncompressed tar)"
        )
    name = out.stem if name is None else name
    if (
        not name
        or name in (".", "..")
        or name != name.strip()
        or any(c in name for c in "/\\\0")
    ):
        raise ValueError(
            f"--name {name!r}: expected a plain folder name (no slashes), "
            "e.g. kvasir-train"
        )
    return name


def resolve_pack_split(root: Path, split: str | Path) -> Path:
    """The split file: relative to ``root`` first, else as :func:`resolve_split` does.

    ``splits/train.txt`` means ``root/splits/train.txt``; an absolute path (or
    one relative to the working folder) is taken as given; ``train`` and
    ``test`` name the dataset's own split files.

    Raises:
        DatasetError: No such split file.
    """
    path = Path(split)
    if not path.is_absolute() and (root / path).is_file():
        return root / path
    from training.evaluate import resolve_split  # torch/smp-heavy; only if needed

    try:
        return resolve_split(root, str(split))[1]
    except DatasetError:
        raise DatasetError(
            f"--split {str(split)!r}: no such split file in {root} or as given; "
            "expected a split file relative to --data (e.g. splits/train.txt), an "
            "absolute path, or 'train'/'test'"
        ) from None


def find_jpegtran() -> str:
    """Path of the ``jpegtran`` executable.

    Raises:
        PackError: Not installed (the message names the package).
    """
    found = shutil.which("jpegtran")
    if found is None:
        raise PackError(JPEGTRAN_FIX)
    return found


def transcode_jpeg(jpegtran: str, path: Path) -> bytes:
    """``jpegtran -copy none -optimize -progressive`` of one JPEG file.

    Raises:
        PackError: jpegtran fails or writes nothing.
    """
    done = subprocess.run(
        [jpegtran, *JPEGTRAN_ARGS, str(path)], capture_output=True, check=False
    )
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise PackError(
            f"{path}: jpegtran failed (exit {done.returncode}"
            f"{': ' + detail[0] if detail else ''})"
        )
    return done.stdout


def encode_mask(mask: np.ndarray) -> bytes:
    """An (H, W) {0, 1} mask as a bilevel (1-bit) PNG of 0/255."""
    ok, buffer = cv2.imencode(
        ".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1]
    )
    if not ok:
        raise PackError("cannot encode a mask as PNG")
    return buffer.tobytes()


def pack_split(
    root: str | Path,
    split: str | Path,
    out: str | Path,
    *,
    optimize_jpeg: bool = False,
    name: str | None = None,
) -> PackResult:
    """Pack the images and masks of one split into ``out`` and verify it.

    Args:
        root: Kvasir-SEG-style folder (``images/`` and ``masks/``).
        split: Split file, relative to ``root`` or absolute (or ``train``/``test``).
        out: The ``.tar`` to write (replaced atomically, only once verified).
        optimize_jpeg: Transcode JPEG images losslessly with jpegtran.
        name: Folder at the top of the tar (default: ``out``'s stem).

    Raises:
        ValueError: ``out`` or ``name`` is unusable.
        DatasetError: Missing folder or split file, a stem without image or
            mask, an undecodable file, or image and mask sizes differ.
        PackError: jpegtran is missing or fails, or a packed image or mask
            does not decode to the source's pixels (the message names the stem).
        OSError: Reading or writing files.
    """
    start = time.monotonic()
    root, out = Path(root), Path(out)
    name = check_target(out, name)
    jpegtran = find_jpegtran() if optimize_jpeg else None
    folder = PolypFolder.open(root)
    split_file = resolve_pack_split(root, split)
    stems = read_split(split_file)
    folder.check(stems, str(split_file))
    log.info(
        "packing %d image/mask pairs of %s from %s%s",
        len(stems),
        split_file,
        root,
        " (JPEGs through jpegtran)" if jpegtran else "",
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    sizes = dict.fromkeys(("source_image", "source_mask", "image", "mask"), 0)
    transcoded = 0
    try:
        split_mtime = int(split_file.stat().st_mtime)
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for folder_name in ("", "/images", "/masks", "/splits"):
                _add(tar, f"{name}{folder_name}", None, split_mtime)
            _add(
                tar,
                f"{name}/splits/{split_file.name}",
                split_file.read_bytes(),
                split_mtime,
            )
            for stem in stems:
                image_path, mask_path = folder.images[stem], folder.masks[stem]
                data = image_path.read_bytes()
                sizes["source_image"] += len(data)
                if jpegtran and image_path.suffix.lower() in JPEG_SUFFIXES:
                    data = transcode_jpeg(jpegtran, image_path)
                    transcoded += 1
                sizes["image"] += len(data)
                _add(
                    tar,
                    f"{name}/images/{image_path.name}",
                    data,
                    int(image_path.stat().st_mtime),
                )
                sizes["source_mask"] += mask_path.stat().st_size
                mask = encode_mask(folder.load_mask(stem))
                sizes["mask"] += len(mask)
                _add(
                    tar,
                    f"{name}/masks/{stem}.png",
                    mask,
                    int(mask_path.stat().st_mtime),
                )
        verify_pack(partial, name, split_file.name, stems, folder)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return PackResult(
        out=out,
        name=name,
        split_file=split_file,
        count=len(stems),
        source_image_bytes=sizes["source_image"],
        source_mask_bytes=sizes["source_mask"],
        packed_image_bytes=sizes["image"],
        packed_mask_bytes=sizes["mask"],
        packed_bytes=out.stat().st_size,
        transcoded=transcoded,
        seconds=time.monotonic() - start,
    )


def verify_pack(
    tar_path: Path,
    name: str,
    split_name: str,
    stems: list[str],
    source: PolypFolder,
) -> None:
    """Extract ``tar_path`` and require it to be ``source``'s split, pixel for pixel.

    The tar must hold exactly the expected members; the extracted folder must
    open as a :class:`PolypFolder`, its split file must list ``stems``, and each
    packed image and mask must decode to arrays equal to the source's.

    Raises:
        PackError: Anything differs (the message names the first stem).
        DatasetError: A packed or source file cannot be decoded, or an image
            and its mask differ in size.
    """
    expected = {name, f"{name}/images", f"{name}/masks", f"{name}/splits"}
    expected.add(f"{name}/splits/{split_name}")
    for stem in stems:
        expected.add(f"{name}/images/{source.images[stem].name}")
        expected.add(f"{name}/masks/{stem}.png")
    log.info("verifying %s: decoding every packed image and mask", tar_path)
    with tempfile.TemporaryDirectory(prefix="streamseg-pack-") as scratch:
        with tarfile.open(tar_path) as tar:
            members = tar.getnames()
            if len(members) != len(expected) or set(members) != expected:
                odd = sorted(set(members) ^ expected)
                raise PackError(
                    f"{tar_path}: holds {len(members)} entries, expected "
                    f"{len(expected)} (e.g. {odd[:3]})"
                )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(scratch, filter="data")
            else:  # Python without extraction filters; members were checked above
                tar.extractall(scratch)
        packed = PolypFolder.open(Path(scratch) / name)
        listed = read_split(packed.root / "splits" / split_name)
        if listed != stems:
            raise PackError(
                f"{tar_path}: the packed split file lists other stems than the source"
            )
        for stem in stems:
            image, mask = source.load_pair(stem)
            packed_image, packed_mask = packed.load_pair(stem)
            if not np.array_equal(packed_image, image):
                raise PackError(
                    f"{stem}: the packed image does not decode to the pixels of "
                    f"{source.images[stem]}; not packed"
                )
            if not np.array_equal(packed_mask, mask):
                raise PackError(
                    f"{stem}: the packed mask does not decode to the thresholded "
                    f"mask of {source.masks[stem]}; not packed"
                )


def _add(tar: tarfile.TarFile, path: str, data: bytes | None, mtime: int) -> None:
    """Add a folder (``data`` None) or a file with fixed owner and mode."""
    info = tarfile.TarInfo(path)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
