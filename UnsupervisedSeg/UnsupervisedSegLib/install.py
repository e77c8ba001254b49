"""Installing the engine into Slicer's Python: what to install, from where, and what to leave alone.

Standard library only: this runs before the engine and its dependencies are installed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

ENGINE_DISTRIBUTION = "unsupervised-seg"
# The oldest engine release this module works with.
MINIMUM_ENGINE_VERSION = "0.1.0"
MINIMUM_TORCH_VERSION = "2.0"
# Packages Slicer's Python already has and that pip must never replace there (SimpleITK and numpy
# are Slicer's own builds; torch comes from the PyTorch extension, matched to the GPU driver).
SLICER_OWNED_PACKAGES = ("numpy", "simpleitk", "torch")
# Environment variable naming another pip source for the engine (a wheel, a git URL, a folder).
PIP_SOURCE_VARIABLE = "UNSUPERVISED_SEG_PIP_SOURCE"


def engine_install_source(module_dir, environment: Optional[Mapping[str, str]] = None) -> str:
    """pip source of the engine: ``UNSUPERVISED_SEG_PIP_SOURCE`` when set, else the source checkout
    holding the module (``module_dir``'s parent has pyproject.toml and src/unsupervised_seg), else the
    released package at ``MINIMUM_ENGINE_VERSION`` or later."""
    environment = os.environ if environment is None else environment
    if environment.get(PIP_SOURCE_VARIABLE):
        return environment[PIP_SOURCE_VARIABLE]
    checkout = Path(module_dir).resolve().parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "unsupervised_seg").is_dir():
        return str(checkout)
    return f"{ENGINE_DISTRIBUTION}>={MINIMUM_ENGINE_VERSION}"


def normalise_package_name(name: str) -> str:
    """PEP 503 normalised project name: lower case, runs of ``-_.`` -> ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")


def requirements_to_install(requires: Iterable[str], keep: Sequence[str] = SLICER_OWNED_PACKAGES
                            ) -> Tuple[List[str], List[str]]:
    """Split the engine's ``Requires-Dist`` lines into (to install, left to Slicer).

    ``requires`` is what ``importlib.metadata.requires("unsupervised-seg")`` returns, e.g.
    ``["torch>=2.0,<3", "numpy>=1.23", 'pydicom>=2.4; extra == "dicom"']``. Requirements that only
    apply to an extra are dropped (the module needs none); those naming a package in ``keep`` are
    returned second, untouched. The first list holds one pip argument per requirement, e.g.
    ``"monai>=1.3"`` or ``'tomli>=1; python_version < "3.11"'``.
    """
    keep_names = {normalise_package_name(k) for k in keep}
    install, kept = [], []
    for line in requires or []:
        match = _REQUIREMENT.match(line)
        if not match:
            raise ValueError(f"cannot parse requirement {line!r}")
        name, extras, spec, marker = match.groups()
        if marker and "extra" in marker:
            continue
        requirement = name + (extras or "") + re.sub(r"\s+", "", spec or "").strip("()")
        if marker:
            requirement += f"; {marker.strip()}"  # pip evaluates environment markers itself
        (kept if normalise_package_name(name) in keep_names else install).append(requirement)
    return install, kept


def pin_constraints(installed: Mapping[str, Optional[str]]) -> str:
    """Text of a pip constraints file that pins every installed package of ``installed``
    ({name: version or None}) to its version, so that installing the engine's dependencies can
    never replace Slicer's numpy, SimpleITK or torch (pip fails clearly instead)."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(installed.items()) if version)


def installed_versions(names: Sequence[str] = SLICER_OWNED_PACKAGES) -> Dict[str, Optional[str]]:
    """{name: installed version or None} from the running interpreter's package metadata."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def version_tuple(version: str) -> Tuple[int, ...]:
    """(2, 1, 0) for "2.1.0+cu118": the leading numeric release fields of a version string."""
    fields = []
    for part in re.split(r"[.+-]", version):
        if not part.isdigit():
            break
        fields.append(int(part))
    return tuple(fields)


def version_at_least(version: Optional[str], minimum: str) -> bool:
    """True when ``version`` (None: not installed) is at least ``minimum``."""
    if not version:
        return False
    have, need = version_tuple(version), version_tuple(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))
