"""`make device-bundle`: what a GPU machine without network needs to run a `bench-quality` preset, in `.device/`.

The GPU image has Python 3.12 with its own torch, numpy and sentence-transformers but not this project's other
imports, and transformers at another major version. This copies the named datasets to ``.device/data`` and
downloads, for CPython 3.12 on manylinux x86-64, the wheels of those packages at the versions installed here (so
the GPU run uses the code paths the tests cover) to ``.device/wheels``. It prints the command to run there, from
the project's root, with ``.device`` carried.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from benchmarks.common import DATA

BUNDLE = Path(".device")
# imported by the training code, missing from the GPU image or there at an incompatible version
PACKAGES = (
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "annotated-types",
    "typing-inspection",
    "python-dotenv",
    "orjson",
    "confluent-kafka",
    "rocksdict",
    "transformers",
    "tokenizers",
    "huggingface-hub",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def device_command(preset: str, datasets: list[str]) -> str:
    """The command a GPU machine runs from the project's root, with ``.device`` carried and results in ``$OUT``."""
    return (
        "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/wheels/*.whl"
        " && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 -m benchmarks.quality --data .device/data"
        f" --datasets {' '.join(datasets)} --models tiger --preset {preset} --out /tmp/store --state /tmp/state --results $OUT"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty"])
    parser.add_argument("--preset", default="beauty-gpu")
    args = parser.parse_args()
    for name in args.datasets:
        shutil.copytree(DATA / name, BUNDLE / "data" / name, dirs_exist_ok=True)
    wheels = BUNDLE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in PACKAGES]
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "--dest",
            str(wheels),
            *pins,
        ],
        check=True,
    )
    size = sum(path.stat().st_size for path in BUNDLE.rglob("*") if path.is_file()) / 2**20
    print(f"{BUNDLE}/: {size:.1f} MiB. On the GPU machine, from the project's root, with {BUNDLE} carried:")
    print(device_command(args.preset, args.datasets))


if __name__ == "__main__":
    main()
