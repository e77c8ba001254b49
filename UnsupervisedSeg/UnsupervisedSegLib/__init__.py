"""Helpers of the UnsupervisedSeg Slicer module that are not Slicer calls themselves.

Slicer puts the module's folder on ``sys.path``, so the module imports this package as
``UnsupervisedSegLib`` (the convention for scripted-module helpers). It is split by responsibility:

- ``install``: what to pip-install into Slicer's Python, and from where;
- ``command``: the module's parameters and the engine command line built from them;
- ``monitor``: the engine's ``--progress json`` output turned into a progress bar, status and outcome;
- ``segments``: scribble classes in, named and coloured result segments out, voxel grids;
- ``process``: the engine's background process inside Slicer (the only part that needs Slicer and Qt).

All but ``process`` import only the standard library at load time (numpy lazily, inside the
functions that need it) and never the engine: they work before the engine is installed, and CI
tests them without Slicer. The engine is only ever run as ``python -m unsupervised_seg segment ...``.
"""
