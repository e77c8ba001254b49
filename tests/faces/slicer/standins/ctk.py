"""Stand-in for the ``ctk`` module of the 3D Slicer application, written for this project's tests.

CTK is a library of Qt widgets. The module's logic uses none of them (its widgets come from the .ui
file, which only the application loads), so this stand-in is empty and says so when asked for one.
"""


def __getattr__(name):
    raise AttributeError(
        f"ctk.{name} is a Qt widget: only the Slicer application has it (tests/faces/slicer/standins/ctk.py)"
    )
