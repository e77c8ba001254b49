"""A headless 3D Slicer for tests: a real MRML scene and module logics from PyPI's slicer-core, with
this project's own small stand-ins for what only the application has (Qt, ``slicer.app``,
``ScriptedLoadableModule``, ``parameterNodeWrapper``, ``i18n``; see standins/).

``boot()`` does what the application does at start-up, as far as a scripted module's logic needs:
- assigns a scene to ``slicer.mrmlScene``, with the application logic and the default colour nodes;
- registers the module logics by name (Colors, Volumes, Segmentations, SubjectHierarchy), so that
  ``slicer.modules.<name>.logic()`` answers (the Segmentations logic's SetMRMLScene registers the
  representation converters: segments cannot be made before it has run);
- observes the scene and gives each new data node a subject-hierarchy item, as the application's
  subject-hierarchy plugins (Qt code) do;
- puts the module's folder on ``sys.path`` (for ``UnsupervisedSegLib``) and loads the module file by
  path, as Slicer loads scripted modules.
Everything it writes lies in one temporary folder that ``Slicer.shutdown()`` removes.
"""

import colorsys
import importlib.util
import shutil
import sys
import tempfile
import types
from pathlib import Path

STANDINS = Path(__file__).resolve().parent / "standins"
# The application's pure-Python modules this harness replaces: {import name: stand-in file}.
STANDIN_MODULES = {
    "qt": "qt.py",
    "ctk": "ctk.py",
    "slicer.ScriptedLoadableModule": "ScriptedLoadableModule.py",
    "slicer.parameterNodeWrapper": "parameterNodeWrapper.py",
    "slicer.i18n": "i18n.py",
}
SLICER_VERSION = (5, 13)
# Colour tables the application loads from its share/ColorFiles folder at start-up (the wheel has no
# colour files); label maps use GenericColors by default, the Segment Editor GenericAnatomyColors.
COLOR_FILES = ("GenericColors.txt", "GenericAnatomyColors.txt")


def _loadFile(name, path):
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _writeColorFile(path, count=64):
    """A colour table file in Slicer's format (index name r g b a, 0-255): background, then a hue wheel."""
    lines = ["# made by the UnsupervisedSeg test harness", "0 Background 0 0 0 0"]
    for index in range(1, count):
        r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.6, 0.9)
        lines.append(f"{index} label_{index} {int(r * 255)} {int(g * 255)} {int(b * 255)} 255")
    path.write_text("\n".join(lines) + "\n")


class _Module:
    """What ``slicer.modules.<name>`` answers: a name, a logic, the module file of a scripted module."""

    def __init__(self, name, logic=None, path=None, module=None):
        self.name, self._logic, self.path, self.module = name, logic, path, module
        self.title = name

    def logic(self):
        return self._logic

    def widgetRepresentation(self):
        return None  # no widgets without the application


class _Modules(types.SimpleNamespace):
    def get(self, name, default=None):
        return getattr(self, name, default)


class _ModuleManager:
    def __init__(self, modules):
        self._modules = modules

    def module(self, name):
        return self._modules.get(name.lower())


class Application:
    """Stand-in for ``slicer.app`` (qSlicerApplication): paths, version, the event loop of the qt
    stand-in, testing mode on (message boxes are skipped and return their testing answer)."""

    applicationName = "Slicer"
    majorVersion, minorVersion = SLICER_VERSION

    def __init__(self, applicationLogic, scene, temporaryPath, modules):
        self._applicationLogic, self._scene, self.temporaryPath = applicationLogic, scene, str(temporaryPath)
        self._moduleManager = _ModuleManager(modules)
        self.commandOptions = lambda: types.SimpleNamespace(noMainWindow=True)

    def applicationLogic(self):
        return self._applicationLogic

    def mrmlScene(self):
        return self._scene

    def moduleManager(self):
        return self._moduleManager

    def processEvents(self):
        import qt

        qt.eventLoop.process()

    def testingEnabled(self):
        return True

    def startupEnvironment(self):
        import qt

        return qt.QProcessEnvironment()

    def layoutManager(self):
        return None

    def setOverrideCursor(self, cursor):
        pass

    def restoreOverrideCursor(self):
        pass

    def pauseRender(self):
        pass

    def resumeRender(self):
        pass


class Slicer:
    """One booted harness: ``scene``, ``logics`` {name: logic}, ``module`` (the loaded module file),
    ``temporaryPath`` (``slicer.app.temporaryPath``)."""

    def __init__(self, moduleFile):
        import slicer
        import vtk

        if not hasattr(slicer, "vtkMRMLScene") or not hasattr(slicer, "vtkSlicerSegmentationsModuleLogic"):
            raise RuntimeError(f"`import slicer` found {getattr(slicer, '__file__', slicer)}, not slicer-core's MRML")
        self._slicer, self._vtk = slicer, vtk
        self._saved = {name: sys.modules.get(name) for name in list(STANDIN_MODULES) + ["UnsupervisedSeg"]}
        self._savedAttributes = {
            name: getattr(slicer, name, None)
            for name in ("mrmlScene", "app", "modules", "ScriptedLoadableModule", "parameterNodeWrapper", "i18n")
        }
        self.temporaryFolder = Path(tempfile.mkdtemp(prefix="unsupervised-seg-slicer-"))
        self.temporaryPath = self.temporaryFolder / "temp"
        self.temporaryPath.mkdir()
        self.moduleFile = Path(moduleFile).resolve()
        self._sysPath = str(self.moduleFile.parent)
        try:
            self._boot()
        except BaseException:
            self.shutdown()
            raise

    def _boot(self):
        slicer, vtk = self._slicer, self._vtk
        for name, file in STANDIN_MODULES.items():
            module = _loadFile(name, STANDINS / file)
            if name.startswith("slicer."):
                setattr(slicer, name.split(".", 1)[1], module)

        home = self.temporaryFolder / "home"
        share = f"share/Slicer-{SLICER_VERSION[0]}.{SLICER_VERSION[1]}"
        colorFiles = home / share / "ColorFiles"
        colorFiles.mkdir(parents=True)
        for name in COLOR_FILES:
            _writeColorFile(colorFiles / name)

        self.scene = scene = slicer.vtkMRMLScene()
        self.applicationLogic = applicationLogic = slicer.vtkSlicerApplicationLogic()
        applicationLogic.SetHomeDirectory(str(home))
        applicationLogic.SetShareDirectory(share)
        applicationLogic.SetTemporaryPath(str(self.temporaryPath))
        applicationLogic.SetMRMLScene(scene)
        slicer.mrmlScene = scene

        self.logics = {}
        for name, logicClass in (
            ("Colors", slicer.vtkSlicerColorLogic),
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ):
            logic = logicClass()
            logic.SetMRMLApplicationLogic(applicationLogic)
            logic.SetMRMLScene(scene)
            applicationLogic.SetModuleLogic(name, logic)
            self.logics[name] = logic
        modules = _Modules(**{name.lower(): _Module(name, logic) for name, logic in self.logics.items()})
        slicer.modules = modules
        slicer.app = Application(applicationLogic, scene, self.temporaryPath, modules)

        @vtk.calldata_type(vtk.VTK_OBJECT)  # VTK passes the node only to callbacks marked so
        def onNodeAdded(caller, event, node):
            self._createSubjectHierarchyItem(node)

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def onNodeAboutToBeRemoved(caller, event, node):
            self._removeSubjectHierarchyItem(node)

        self._observers = [
            scene.AddObserver(scene.NodeAddedEvent, onNodeAdded),
            scene.AddObserver(scene.NodeAboutToBeRemovedEvent, onNodeAboutToBeRemoved),
        ]

        sys.path.insert(0, self._sysPath)
        self.module = _loadFile(self.moduleFile.stem, self.moduleFile)
        parent = types.SimpleNamespace(path=str(self.moduleFile))
        self.module.__dict__[self.moduleFile.stem](parent)  # UnsupervisedSeg(parent) fills in title, categories...
        modules.__dict__[self.moduleFile.stem.lower()] = _Module(
            self.moduleFile.stem, path=str(self.moduleFile), module=parent
        )

    def _createSubjectHierarchyItem(self, node):
        """Give a new data node (volume, segmentation, transform, model, markups) a subject-hierarchy
        item under the scene, unless it is hidden from editors or already has one: what the
        application's subject-hierarchy plugins do (their code is Qt, not in slicer-core)."""
        if node is None or node.GetHideFromEditors() or not node.IsA("vtkMRMLDisplayableNode"):
            return
        shNode = self.subjectHierarchy()
        if shNode and not shNode.GetItemByDataNode(node):
            shNode.CreateItem(shNode.GetSceneItemID(), node)

    def _removeSubjectHierarchyItem(self, node):
        """Remove a removed node's item (not its children): the application's plugin logic does that too."""
        shNode = self.subjectHierarchy()
        itemID = shNode.GetItemByDataNode(node) if shNode and node is not None else 0
        if itemID:
            shNode.RemoveItem(itemID, False, False)

    def subjectHierarchy(self):
        return self._slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def shutdown(self):
        """Clear the scene, put back what boot replaced, remove the temporary folder."""
        slicer = self._slicer
        for observer in getattr(self, "_observers", []):
            self.scene.RemoveObserver(observer)
        if getattr(self, "scene", None) is not None:
            self.scene.Clear(1)
        if self._sysPath in sys.path:
            sys.path.remove(self._sysPath)
        for name, module in self._saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name in [n for n in sys.modules if n == "UnsupervisedSegLib" or n.startswith("UnsupervisedSegLib.")]:
            del sys.modules[name]
        for name, value in self._savedAttributes.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        shutil.rmtree(self.temporaryFolder, ignore_errors=True)


def boot(moduleFile):
    """A booted ``Slicer``; raises ImportError when slicer-core cannot be imported."""
    import slicer  # noqa: F401  (ImportError: slicer-core is not installed)

    return Slicer(moduleFile)
