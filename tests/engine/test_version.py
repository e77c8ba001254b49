"""The version is written once (core/version.py); the installed metadata and the bundle agree with it."""

import importlib.metadata
import json
from pathlib import Path

from unsupervised_seg import __version__

BUNDLE_METADATA = Path(__file__).resolve().parents[2] / "monai_bundle" / "configs" / "metadata.json"


def test_distribution_and_bundle_carry_the_package_version():
    assert importlib.metadata.version("unsupervised-seg") == __version__
    metadata = json.loads(BUNDLE_METADATA.read_text())
    assert metadata["required_packages_version"]["unsupervised-seg"] == __version__
    assert metadata["version"] in metadata["changelog"]
