"""3D Slicer module: unsupervised segmentation by differentiable feature clustering, steered by scribbles.

A thin layer of Slicer calls. The segmentation runs in the `unsupervised_seg` engine, started as a
background process (``python -m unsupervised_seg segment ...``); everything that is not a Slicer
call (the command line, progress parsing, segment names and colours, scribble label maps, what to
install) lives in ``unsupervised_seg.slicer_support`` and is tested outside Slicer.
"""
import importlib.util
import logging
import os
import queue
import shutil
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Union

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# The oldest engine release this module works with.
MINIMUM_ENGINE_VERSION = "0.1.0"
ENGINE_DISTRIBUTION = "unsupervised-seg"


#
# UnsupervisedSeg
#

class UnsupervisedSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Unsupervised Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["UnsupervisedSeg developers"]
        self.parent.helpText = """
Segments a volume without training data: a small convolutional network is trained on this volume
alone, at run time, so that voxels that look alike and lie together end up in the same cluster.
Draw a few strokes per structure in the Segment Editor (one segment per structure) to steer it:
each scribble segment becomes one output segment with its name and colour; the other clusters are
named "Cluster k". Apply runs in the background (Cancel stops it); Refine continues from the
previous run's network after you add or correct scribbles, for a quick correction.
<br><br>
Method: W. Kim, A. Kanezaki, M. Tanaka, "Unsupervised Learning of Image Segmentation Based on
Differentiable Feature Clustering", IEEE Transactions on Image Processing 29, 8055-8068 (2020),
<a href="https://doi.org/10.1109/TIP.2020.3011269">doi:10.1109/TIP.2020.3011269</a>.
"""
        self.parent.acknowledgementText = """
Based on the method and reference implementation of Wonjik Kim, Asako Kanezaki and Masayuki Tanaka
(IEEE TIP 2020). The engine is built on PyTorch and MONAI; the bundled sample is derived from the
MNI ICBM152 2009a template (see the engine's data/LICENSE-MNI152.txt).
"""


#
# UnsupervisedSegParameterNode
#

@parameterNodeWrapper
class UnsupervisedSegParameterNode:
    """What the module remembers in the scene (restored when the scene is saved and loaded).

    Defaults match ``unsupervised_seg.slicer_support.RunParameters`` (checked in CI).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    extraVolumes: list[vtkMRMLScalarVolumeNode]
    scribbleSegmentation: vtkMRMLSegmentationNode
    roiNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]
    roiSegmentID: str = ""
    outputSegmentation: vtkMRMLSegmentationNode
    numberOfLabels: Annotated[int, WithinRange(0, 255)] = 0
    iterations: Annotated[int, WithinRange(1, 10000)] = 200
    refineIterations: Annotated[int, WithinRange(1, 10000)] = 50
    detail: Annotated[int, WithinRange(2, 255)] = 32
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


#
# UnsupervisedSegWidget
#

class UnsupervisedSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/UnsupervisedSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = UnsupervisedSegLogic()
        self.logic.logCallback = self.addLog

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.editScribblesButton.connect("clicked(bool)", self.onEditScribbles)
        self.ui.extraVolumesSelector.connect("checkedNodesChanged()", self.onExtraVolumesChanged)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateRoiSegments)
        self.ui.roiSegmentComboBox.connect("currentIndexChanged(int)", self.onRoiSegmentChanged)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()
        self.logic.forgetModel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.logic.forgetModel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self.updateGuiState()

    def updateGuiState(self, caller=None, event=None) -> None:
        """Widgets that the parameter node wrapper does not connect, and the buttons' states."""
        if self._updatingGui:
            return
        self._updatingGui = True
        try:
            node = self._parameterNode
            checked = {v.GetID() for v in (node.extraVolumes if node else []) if v}
            for index in range(self.ui.extraVolumesSelector.nodeCount()):
                volume = self.ui.extraVolumesSelector.nodeFromIndex(index)
                state = qt.Qt.Checked if volume.GetID() in checked else qt.Qt.Unchecked
                self.ui.extraVolumesSelector.setCheckState(volume, state)
            self.updateRoiSegments()
            running = self.logic.isRunning()
            hasInput = bool(node and node.inputVolume)
            self.ui.applyButton.enabled = hasInput and not running
            self.ui.refineButton.enabled = bool(hasInput and not running and self.logic.canRefine(
                self._volumes(), node.detail))
            self.ui.cancelButton.enabled = running
            self.ui.applyButton.toolTip = ("Segment the input volume." if hasInput
                                           else "Select an input volume first.")
        finally:
            self._updatingGui = False

    def _volumes(self):
        node = self._parameterNode
        return [node.inputVolume] + [v for v in node.extraVolumes if v and v != node.inputVolume]

    def onExtraVolumesChanged(self) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.extraVolumes = list(self.ui.extraVolumesSelector.checkedNodes())

    def updateRoiSegments(self, *args) -> None:
        """Fill the ROI segment list from the ROI segmentation (hidden for a label map ROI)."""
        node = self._parameterNode
        roi = self.ui.roiSelector.currentNode()
        isSegmentation = bool(roi and roi.IsA("vtkMRMLSegmentationNode"))
        self.ui.roiSegmentComboBox.visible = isSegmentation
        self.ui.roiSegmentLabel.visible = isSegmentation
        wasBlocked = self.ui.roiSegmentComboBox.blockSignals(True)
        self.ui.roiSegmentComboBox.clear()
        if isSegmentation:
            segmentation = roi.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                segmentID = segmentation.GetNthSegmentID(index)
                self.ui.roiSegmentComboBox.addItem(segmentation.GetSegment(segmentID).GetName(), segmentID)
            current = self.ui.roiSegmentComboBox.findData(node.roiSegmentID if node else "")
            self.ui.roiSegmentComboBox.currentIndex = max(current, 0)
        self.ui.roiSegmentComboBox.blockSignals(wasBlocked)

    def onRoiSegmentChanged(self, index) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.roiSegmentID = self.ui.roiSegmentComboBox.itemData(index) or ""

    def onEditScribbles(self) -> None:
        """Open the Segment Editor on the scribble segmentation (created if there is none)."""
        node = self._parameterNode
        if not node.inputVolume:
            slicer.util.warningDisplay("Select an input volume first.")
            return
        if not node.scribbleSegmentation:
            scribbles = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Scribbles")
            scribbles.CreateDefaultDisplayNodes()
            scribbles.SetReferenceImageGeometryParameterFromVolumeNode(node.inputVolume)
            node.scribbleSegmentation = scribbles
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(node.scribbleSegmentation)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(node.inputVolume)
        else:
            editor.setMasterVolumeNode(node.inputVolume)

    def onApply(self) -> None:
        self._start(refine=False)

    def onRefine(self) -> None:
        self._start(refine=True)

    def _start(self, refine: bool) -> None:
        node = self._parameterNode
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        if not self.logic.engineInstalled():
            if not slicer.util.confirmOkCancelDisplay(UnsupervisedSegLogic.INSTALL_QUESTION,
                                                      "Install the segmentation engine"):
                return
            self.ui.logCollapsibleButton.collapsed = False
            with slicer.util.tryWithErrorDisplay("Installing the segmentation engine failed (pip's output is in "
                                                 "the Python console). Check the network connection, then "
                                                 "press Apply again to retry.", waitCursor=True):
                self.logic.setupEngine(askConfirmation=False)
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            if not node.outputSegmentation:
                output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                            f"{node.inputVolume.GetName()} segmentation")
                node.outputSegmentation = output
            self.logic.process(node.inputVolume, node.outputSegmentation,
                               scribbleSegmentation=node.scribbleSegmentation,
                               extraVolumes=node.extraVolumes, roiNode=node.roiNode,
                               roiSegmentID=node.roiSegmentID, parameters=self.logic.runParameters(node),
                               refine=refine, waitForCompletion=False,
                               progressCallback=self.onProgress, completedCallback=self.onCompleted)
            self.ui.statusLabel.text = "Refining..." if refine else "Segmenting..."
        self.updateGuiState()

    def onCancel(self) -> None:
        self.logic.cancel()

    def onProgress(self, monitor) -> None:
        self.ui.progressBar.value = int(round(1000 * monitor.fraction))
        self.ui.statusLabel.text = monitor.status

    def addLog(self, text) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def onCompleted(self, success: bool, message: str, log: str) -> None:
        self.ui.statusLabel.text = message
        self.ui.progressBar.value = 1000 if success else 0
        self.updateGuiState()
        if not success and message != UnsupervisedSegLogic.CANCELLED:
            self.ui.logCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(f"Segmentation failed: {message}", detailedText=log)


#
# Engine helpers (import and install)
#

def loadEngineSupport():
    """``unsupervised_seg.slicer_support`` of the installed engine.

    Right after the engine is installed without its dependencies the package itself cannot be
    imported yet (it needs torch and MONAI), so the file is then loaded by path: it imports only
    the standard library at load time.
    """
    try:
        from unsupervised_seg import slicer_support
        return slicer_support
    except ImportError:
        pass
    spec = importlib.util.find_spec("unsupervised_seg")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the unsupervised_seg engine is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "slicer_support.py")
    supportSpec = importlib.util.spec_from_file_location("unsupervised_seg_slicer_support", path)
    module = importlib.util.module_from_spec(supportSpec)
    sys.modules[supportSpec.name] = module
    supportSpec.loader.exec_module(module)
    return module


class _BackgroundRun:
    """The engine's process: its output lines are read on a thread and handed to the GUI by a
    QTimer, so Slicer stays responsive; Cancel kills the whole process tree."""

    POLL_INTERVAL_MS = 200

    def __init__(self, command, environment):
        self.command = command
        self.cancelled = False
        self._lines = queue.Queue()
        self._timer = None
        self.process = slicer.util.launchConsoleProcess(command, updateEnvironment=environment)

    def _outputLines(self):
        """The process's output lines until it closes them (undecodable lines are skipped)."""
        while True:
            try:
                line = self.process.stdout.readline()
            except UnicodeDecodeError:
                continue
            if not line:
                return
            yield line

    def _read(self) -> None:
        for line in self._outputLines():
            self._lines.put(line)
        self.process.wait()
        self._lines.put(None)

    def start(self, onLines, onFinished) -> None:
        """Return at once; call onLines(list of lines) as output arrives and
        onFinished(returncode, cancelled) when the process has ended."""
        self._onLines, self._onFinished = onLines, onFinished
        threading.Thread(target=self._read, daemon=True).start()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        lines, finished = [], False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                finished = True
                break
            lines.append(line)
        if lines:
            self._onLines(lines)
        if finished:
            self._timer.stop()
            self._onFinished(self.process.returncode, self.cancelled)

    def wait(self, onLines) -> int:
        """Block until the process ends (the GUI still repaints); returns its exit code."""
        for line in self._outputLines():
            onLines([line])
            slicer.app.processEvents()
        return self.process.wait()

    def kill(self) -> None:
        """Stop the engine: the launcher and every process it started."""
        self.cancelled = True
        try:
            import psutil
        except ImportError:
            self.process.kill()
            return
        try:
            parent = psutil.Process(self.process.pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
        except psutil.NoSuchProcess:
            pass


#
# UnsupervisedSegLogic
#

class UnsupervisedSegLogic(ScriptedLoadableModuleLogic):
    """Exports the inputs, runs the engine in the background and loads its result. No GUI."""

    CANCELLED = "Cancelled."
    INSTALL_QUESTION = ("Unsupervised Segmentation needs its engine (the Python package unsupervised-seg, with "
                        "PyTorch and MONAI) in Slicer's Python. It will be downloaded and installed now, which "
                        "can take several minutes and a few hundred MB.\n\nInstall it?")

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.logCallback = None
        self._run = None
        self._modelFolder = None  # the last successful run's network, for Refine
        self._modelKey = None

    def getParameterNode(self):
        return UnsupervisedSegParameterNode(super().getParameterNode())

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    @staticmethod
    def runParameters(parameterNode):
        """The engine's RunParameters from the module's parameter node."""
        support = loadEngineSupport()
        return support.RunParameters(n_labels=parameterNode.numberOfLabels, max_iter=parameterNode.iterations,
                                     refine_iter=parameterNode.refineIterations,
                                     n_clusters=parameterNode.detail, device=parameterNode.device)

    # ---- the engine in Slicer's Python

    @staticmethod
    def engineInstalled() -> bool:
        """Whether the engine and its dependencies import, at MINIMUM_ENGINE_VERSION or later."""
        try:
            from importlib import metadata

            from unsupervised_seg import slicer_support  # the package imports torch and MONAI
            return slicer_support.version_at_least(metadata.version(ENGINE_DISTRIBUTION), MINIMUM_ENGINE_VERSION)
        except Exception:
            return False

    def setupEngine(self, askConfirmation: bool = True) -> bool:
        """Install the engine into Slicer's Python: torch through the PyTorch extension when it is
        there, the engine without its dependencies, then its dependencies except the packages
        Slicer owns (numpy, SimpleITK, torch), which a constraints file pins to Slicer's versions.
        Returns False if the user declined."""
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(self.INSTALL_QUESTION,
                                                                      "Install the segmentation engine"):
            return False
        from importlib import metadata
        moduleDir = os.path.dirname(__file__)
        source = _engineSource(moduleDir)
        self.log(f"Installing the engine from {source} (without its dependencies)...")
        slicer.util.pip_install(["--no-deps", "--upgrade", source])
        importlib.invalidate_caches()
        support = loadEngineSupport()

        self._installTorch(support)

        install, kept = support.requirements_to_install(metadata.requires(support.ENGINE_DISTRIBUTION))
        try:
            import psutil  # noqa: F401  (Cancel kills the engine's process tree with it)
        except ImportError:
            install.append("psutil")
        folder = Path(slicer.util.tempDirectory(key="UnsupervisedSegInstall"))
        constraints = folder / "constraints.txt"
        constraints.write_text(support.pin_constraints(support.installed_versions()))
        self.log(f"Keeping Slicer's own {', '.join(kept)}; installing {', '.join(install)}...")
        try:
            slicer.util.pip_install([*install, "-c", str(constraints)])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        importlib.invalidate_caches()
        if not self.engineInstalled():
            raise RuntimeError("The engine was installed but cannot be imported; see the Python console.")
        self.log("The engine is installed.")
        return True

    def _installTorch(self, support) -> None:
        requirement = f">={support.MINIMUM_TORCH_VERSION}"
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                self.log("Installing PyTorch with the PyTorch extension (this can take several minutes)...")
                if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=requirement) is None:
                    raise RuntimeError("PyTorch could not be installed (PyTorch Utils module).")
        elif importlib.util.find_spec("torch") is None:
            self.log("The PyTorch extension is not installed: installing torch from PyPI. Install the "
                     "PyTorch extension (Extensions Manager) for a build that matches your GPU.")
            slicer.util.pip_install(f"torch{requirement}")
        importlib.invalidate_caches()
        version = support.installed_versions(["torch"])["torch"]
        if not support.version_at_least(version, support.MINIMUM_TORCH_VERSION):
            raise RuntimeError(f"PyTorch {version} is too old: this module needs torch{requirement}. "
                               "Update it in the PyTorch Utils module.")
        self.log(f"Using PyTorch {version}.")

    @staticmethod
    def pythonExecutable() -> str:
        return shutil.which("PythonSlicer") or sys.executable

    # ---- running

    def isRunning(self) -> bool:
        return self._run is not None

    def canRefine(self, volumes, detail: int) -> bool:
        """Whether a previous run on these volumes (same number of clusters) left a network to refine."""
        return bool(self._modelFolder and self._modelKey == self._key(volumes, detail)
                    and (Path(self._modelFolder) / "model.pt").is_file())

    @staticmethod
    def _key(volumes, detail):
        return tuple(v.GetID() for v in volumes if v), int(detail)

    def forgetModel(self) -> None:
        if self._modelFolder:
            shutil.rmtree(self._modelFolder, ignore_errors=True)
        self._modelFolder = self._modelKey = None

    def cancel(self) -> None:
        if self._run is not None:
            self.log("Cancelling...")
            self._run.kill()

    def process(self, inputVolume, outputSegmentation, scribbleSegmentation=None, extraVolumes=(),
                roiNode=None, roiSegmentID="", parameters=None, refine=False, waitForCompletion=True,
                progressCallback=None, completedCallback=None):
        """Segment ``inputVolume`` (plus ``extraVolumes`` as more channels) into ``outputSegmentation``.

        Scribble segments become classes named after them; ``roiNode`` (a label map, or a segment
        ``roiSegmentID`` of a segmentation) limits the clustering. ``refine`` continues from the
        previous run's network for ``parameters.refine_iter`` iterations.
        With ``waitForCompletion`` the call blocks and raises RuntimeError on failure; otherwise it
        returns at once and calls ``completedCallback(success, message, log)`` at the end.
        ``progressCallback(monitor)`` receives the RunMonitor (``fraction``, ``status``).
        """
        support = loadEngineSupport()
        if self.isRunning():
            raise RuntimeError("A segmentation is already running.")
        if not inputVolume:
            raise ValueError("Select an input volume.")
        if not outputSegmentation:
            raise ValueError("Select or create an output segmentation.")
        if outputSegmentation in (scribbleSegmentation, roiNode):
            raise ValueError("The output segmentation must not be the scribble or ROI segmentation: "
                             "each run replaces the output's segments.")
        parameters = parameters or support.RunParameters()
        volumes = [inputVolume] + [v for v in extraVolumes if v and v != inputVolume]
        self._checkSameGrid(support, volumes)
        if refine and not self.canRefine(volumes, parameters.n_clusters):
            raise ValueError("Refine continues a previous run: press Apply first (same volumes and detail).")

        folder = Path(slicer.util.tempDirectory(key="UnsupervisedSeg"))
        files = support.RunFiles(folder)
        try:
            self._writeInput(support, volumes, files.input)
            classNames, classColors, scribblePath = {}, {}, None
            if scribbleSegmentation:
                exclude = roiSegmentID if roiNode is scribbleSegmentation else None
                classNames, classColors, scribblePath = self._exportScribbles(
                    support, scribbleSegmentation, inputVolume, files.scribbles, exclude)
            maskPath = self._exportRoi(roiNode, roiSegmentID, inputVolume, files.mask) if roiNode else None
            command = support.build_command(
                files.input, scribblePath, files.output, parameters.for_refine() if refine else parameters,
                model_in=Path(self._modelFolder) / "model.pt" if refine else None, model_out=files.model,
                python_executable=self.pythonExecutable(), mask_path=maskPath, class_names=classNames)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        self.log(("Refining" if refine else "Segmenting") + f" {inputVolume.GetName()}: {' '.join(command)}")
        # one run: its temporary files, where the result goes, the scribble class tables, its progress
        task = SimpleNamespace(folder=folder, files=files, volumes=volumes, output=outputSegmentation,
                               classNames=classNames, classColors=classColors,
                               key=self._key(volumes, parameters.n_clusters), monitor=support.RunMonitor(),
                               completedCallback=completedCallback)
        try:
            self._run = _BackgroundRun(command, support.ENGINE_ENVIRONMENT)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        def onLines(lines):
            for line in lines:
                if task.monitor.feed(line) is None and line.strip():
                    self.log(line.rstrip())
            if progressCallback:
                progressCallback(task.monitor)

        if not waitForCompletion:
            self._run.start(onLines, lambda code, cancelled: self._finish(task, code, cancelled))
            return None
        returncode = self._run.wait(onLines)
        success, message = self._finish(task, returncode, self._run.cancelled if self._run else False)
        if not success:
            raise RuntimeError(message)
        return message

    def _finish(self, task, returncode, cancelled):
        """Load the result (on success), keep the network for Refine, remove the temporary files."""
        success, message = task.monitor.outcome(returncode)
        if cancelled:
            success, message = False, self.CANCELLED
        try:
            if success:
                self._loadResult(task)
                self._keepModel(task)
        except Exception as error:
            logging.exception("Loading the result failed")
            success, message = False, f"Loading the result failed: {error}"
        finally:
            shutil.rmtree(task.folder, ignore_errors=True)
            self._run = None
        self.log(message)
        if task.completedCallback:
            task.completedCallback(success, message, "\n".join(task.monitor.log))
        return success, message

    def _keepModel(self, task) -> None:
        if not task.files.model.is_file():
            self._modelKey = None
            return
        if not self._modelFolder:
            self._modelFolder = slicer.util.tempDirectory(key="UnsupervisedSegModel")
        os.replace(task.files.model, Path(self._modelFolder) / "model.pt")
        self._modelKey = task.key

    # ---- Slicer data in and out

    @staticmethod
    def _checkSameGrid(support, volumes) -> None:
        reference = volumes[0]
        for volume in volumes[1:]:
            matrices = []
            for node in (reference, volume):
                matrix = vtk.vtkMatrix4x4()
                node.GetIJKToRASMatrix(matrix)
                matrices.append(slicer.util.arrayFromVTKMatrix(matrix))
            if not support.same_grid(reference.GetImageData().GetDimensions(), matrices[0],
                                     volume.GetImageData().GetDimensions(), matrices[1]):
                raise ValueError(f"{volume.GetName()} is not on the voxel grid of {reference.GetName()}: "
                                 "resample it first (Resample Scalar/Vector/DWI Volume module, with "
                                 f"{reference.GetName()} as reference).")

    @staticmethod
    def _removeTemporary(node) -> None:
        """Remove a node this module created for an export, with its display node."""
        displayNode = node.GetDisplayNode() if hasattr(node, "GetDisplayNode") else None
        if displayNode:
            slicer.mrmlScene.RemoveNode(displayNode)
        slicer.mrmlScene.RemoveNode(node)

    def _writeInput(self, support, volumes, path) -> None:
        """The input volume as NRRD; with extra channels, one vector NRRD (one component per volume)."""
        if len(volumes) == 1:
            self._writeVolume(volumes[0], path)
            return
        matrix = vtk.vtkMatrix4x4()
        volumes[0].GetIJKToRASMatrix(matrix)
        channels = support.stack_channels([slicer.util.arrayFromVolume(v) for v in volumes])
        vectorNode = slicer.util.addVolumeFromArray(channels, ijkToRAS=slicer.util.arrayFromVTKMatrix(matrix),
                                                    name="UnsupervisedSeg channels",
                                                    nodeClassName="vtkMRMLVectorVolumeNode")
        try:
            self._writeVolume(vectorNode, path)
        finally:
            self._removeTemporary(vectorNode)

    @staticmethod
    def _writeVolume(volumeNode, path) -> None:
        storageNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storageNode.SetFileName(str(path))
            storageNode.UseCompressionOff()
            if not storageNode.WriteData(volumeNode):
                raise RuntimeError(f"Could not write {volumeNode.GetName()} to {path}")
        finally:
            slicer.mrmlScene.RemoveNode(storageNode)

    @staticmethod
    def _exportToLabelmap(segmentationNode, segmentIDs, referenceVolume):
        """A new label map node on the reference volume's grid: segment i -> label i + 1."""
        labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        for segmentID in segmentIDs:
            ids.InsertNextValue(segmentID)
        if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmapNode, referenceVolume):
            UnsupervisedSegLogic._removeTemporary(labelmapNode)
            raise RuntimeError(f"Could not export the segments of {segmentationNode.GetName()}")
        return labelmapNode

    def _exportScribbles(self, support, segmentationNode, referenceVolume, path, excludeSegmentID=None):
        """Write the scribble segments as a label map; returns (class names, class colours, path)."""
        segmentation = segmentationNode.GetSegmentation()
        segmentIDs = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        segmentIDs = [s for s in segmentIDs if s != excludeSegmentID]
        if not segmentIDs:
            return {}, {}, None
        names, colors = support.scribble_classes(
            [(segmentation.GetSegment(s).GetName(), segmentation.GetSegment(s).GetColor()) for s in segmentIDs])
        labelmapNode = self._exportToLabelmap(segmentationNode, segmentIDs, referenceVolume)
        try:
            labels, names, colors = support.compact_scribbles(slicer.util.arrayFromVolume(labelmapNode),
                                                              names, colors)
            slicer.util.updateVolumeFromArray(labelmapNode, labels)
            self._writeVolume(labelmapNode, path)
        finally:
            self._removeTemporary(labelmapNode)
        return names, colors, path

    def _exportRoi(self, roiNode, roiSegmentID, referenceVolume, path):
        """Write the region of interest (non-zero inside) on the reference volume's grid."""
        temporary = None
        if roiNode.IsA("vtkMRMLLabelMapVolumeNode"):
            temporary = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(roiNode, temporary)
            segmentationNode = temporary
        else:
            segmentationNode = roiNode
        try:
            segmentation = segmentationNode.GetSegmentation()
            segmentIDs = ([roiSegmentID] if roiSegmentID and not temporary and segmentation.GetSegment(roiSegmentID)
                          else [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())])
            if not segmentIDs:
                raise ValueError(f"The region of interest {roiNode.GetName()} is empty.")
            labelmapNode = self._exportToLabelmap(segmentationNode, segmentIDs, referenceVolume)
            try:
                if not slicer.util.arrayFromVolume(labelmapNode).any():
                    raise ValueError(f"The region of interest {roiNode.GetName()} does not overlap "
                                     f"{referenceVolume.GetName()}.")
                self._writeVolume(labelmapNode, path)
            finally:
                self._removeTemporary(labelmapNode)
        finally:
            if temporary:
                self._removeTemporary(temporary)
        return path

    def _loadResult(self, task) -> None:
        """Read the engine's .seg.nrrd into the output node; scribble classes keep their names and
        colours, other clusters are "Cluster k"."""
        support = loadEngineSupport()
        outputNode, inputVolume = task.output, task.volumes[0]
        outputNode.GetSegmentation().RemoveAllSegments()
        storageNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        try:
            storageNode.SetFileName(str(task.monitor.written or task.files.output))
            if not storageNode.ReadData(outputNode):
                raise RuntimeError(f"Slicer could not read {storageNode.GetFileName()}")
        finally:
            slicer.mrmlScene.RemoveNode(storageNode)
        segmentation = outputNode.GetSegmentation()
        byValue = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            byValue[segment.GetLabelValue()] = segment
        for entry in support.result_segments(byValue, task.classNames, task.classColors):
            segment = byValue[entry["value"]]
            segment.SetName(entry["name"])
            segment.SetColor(*entry["color"])
        outputNode.CreateDefaultDisplayNodes()
        outputNode.SetNodeReferenceID(outputNode.GetReferenceImageGeometryReferenceRole(), inputVolume.GetID())
        outputNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        outputNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        shNode.SetItemParent(shNode.GetItemByDataNode(outputNode),
                             shNode.GetItemParent(shNode.GetItemByDataNode(inputVolume)))


def _engineSource(moduleDir) -> str:
    """pip source of the engine: UNSUPERVISED_SEG_PIP_SOURCE, else the source checkout holding this
    module, else the released package (same rule as slicer_support.engine_install_source)."""
    if os.environ.get("UNSUPERVISED_SEG_PIP_SOURCE"):
        return os.environ["UNSUPERVISED_SEG_PIP_SOURCE"]
    checkout = Path(moduleDir).resolve().parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "unsupervised_seg").is_dir():
        return str(checkout)
    return f"{ENGINE_DISTRIBUTION}>={MINIMUM_ENGINE_VERSION}"


#
# UnsupervisedSegTest
#

class UnsupervisedSegTest(ScriptedLoadableModuleTest):
    """The whole flow inside 3D Slicer: volume and scribbles in the scene, segmentation node out.

    Needs a Slicer with this module (Reload and Test, or the command line in UnsupervisedSeg/README.md);
    it installs the engine on first use. It cannot run on CI machines, where Slicer is not installed:
    there, tests/test_slicer_support.py runs the same engine command line outside Slicer.
    """

    GREY, WHITE, CSF = ("grey matter", (0.9, 0.5, 0.3)), ("white matter", (1.0, 1.0, 0.8)), ("CSF", (0.2, 0.4, 1.0))

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ScribblesToSegments()

    def _sampleVolume(self):
        """The engine's bundled MNI152 T1 at 4 mm as a volume node, with its tissue labels
        (1 CSF, 2 grey matter, 3 white matter) and brain mask as (I, J, K) arrays. No download:
        the sample ships inside the engine."""
        import nibabel
        from unsupervised_seg import sample

        every2 = (slice(None, None, 2),) * 3
        t1 = nibabel.load(str(sample.SAMPLE_T1))
        image = np.asarray(t1.dataobj, dtype=np.float32)[every2]
        tissues = np.asarray(nibabel.load(str(sample.SAMPLE_TISSUES)).dataobj)[every2].astype(np.uint8)
        brain = np.asarray(nibabel.load(str(sample.SAMPLE_MASK)).dataobj)[every2] > 0
        ijkToRAS = t1.affine.copy()
        ijkToRAS[:3, :3] *= 2
        volume = slicer.util.addVolumeFromArray(image.transpose(2, 1, 0), ijkToRAS=ijkToRAS, name="MNI152 T1")
        return volume, tissues, brain, ijkToRAS

    @staticmethod
    def _strokesInside(tissues, value):
        """Strokes as a user paints them: the interior of a tissue (in-plane neighbours share its
        label) on the axial slice where that interior is largest. (I, J, K) bool."""
        from scipy import ndimage

        interiors = [ndimage.binary_erosion(tissues[:, :, z] == value) for z in range(tissues.shape[2])]
        z = int(np.argmax([interior.sum() for interior in interiors]))
        strokes = np.zeros(tissues.shape, bool)
        strokes[:, :, z] = interiors[z]
        return strokes

    def _paint(self, scribbles, volume, name, color, strokes):
        segmentID = scribbles.GetSegmentation().AddEmptySegment("", name, color)
        slicer.util.updateSegmentBinaryLabelmapFromArray(strokes.astype(np.uint8).transpose(2, 1, 0), scribbles,
                                                         segmentID, volume)

    def test_ScribblesToSegments(self):
        """Apply with grey and white matter scribbled, then add a CSF segment and Refine."""
        self.delayDisplay("Installing the engine if needed")
        logic = UnsupervisedSegLogic()
        if not logic.engineInstalled():
            logic.setupEngine(askConfirmation=False)
        support = loadEngineSupport()

        volume, tissues, brain, ijkToRAS = self._sampleVolume()
        strokes = {name: self._strokesInside(tissues, value)
                   for value, name in ((1, self.CSF[0]), (2, self.GREY[0]), (3, self.WHITE[0]))}
        scribbles = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Scribbles")
        scribbles.CreateDefaultDisplayNodes()
        scribbles.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        for name, color in (self.GREY, self.WHITE):
            self._paint(scribbles, volume, name, color, strokes[name])
        roi = slicer.util.addVolumeFromArray(brain.astype(np.uint8).transpose(2, 1, 0), ijkToRAS=ijkToRAS,
                                             name="brain", nodeClassName="vtkMRMLLabelMapVolumeNode")
        output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Result")
        parameters = support.RunParameters(max_iter=30, n_clusters=16)  # Refine: the default iterations

        self.delayDisplay("Segmenting")
        logic.process(volume, output, scribbleSegmentation=scribbles, roiNode=roi, parameters=parameters)
        self._checkResult(output, volume, brain, strokes, [self.GREY, self.WHITE])

        self.delayDisplay("Adding a CSF scribble and refining from the previous network")
        self._paint(scribbles, volume, *self.CSF, strokes[self.CSF[0]])
        self.assertTrue(logic.canRefine([volume], parameters.n_clusters))
        logic.process(volume, output, scribbleSegmentation=scribbles, roiNode=roi, parameters=parameters,
                      refine=True)
        self._checkResult(output, volume, brain, strokes, [self.GREY, self.WHITE, self.CSF])
        logic.forgetModel()
        self.delayDisplay("Test passed")

    def _checkResult(self, output, volume, brain, strokes, classes):
        """Scribble classes come first with their names and colours, other segments are clusters,
        the segments cover the ROI and nothing else, and scribbled voxels got their class."""
        segmentation = output.GetSegmentation()
        segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
        self.assertGreaterEqual(len(segments), len(classes))
        self.assertEqual([s.GetLabelValue() for s in segments[:len(classes)]], list(range(1, len(classes) + 1)))
        self.assertEqual([s.GetName() for s in segments[:len(classes)]], [name for name, _ in classes])
        for segment, (name, color) in zip(segments, classes):
            np.testing.assert_allclose(segment.GetColor(), color, atol=1e-3)
        self.assertTrue(all(s.GetName() == f"Cluster {s.GetLabelValue()}" for s in segments[len(classes):]))
        masks = {s.GetName(): slicer.util.arrayFromSegmentBinaryLabelmap(
            output, segmentation.GetSegmentIdBySegmentName(s.GetName()), volume).transpose(2, 1, 0) > 0
            for s in segments}
        union = np.logical_or.reduce(list(masks.values()))
        self.assertFalse(union[~brain].any(), "segments outside the region of interest")
        self.assertTrue(union[brain].all(), "brain voxels without a segment")
        scribbled = agreed = 0
        for name, _ in classes:
            scribbled += int(strokes[name].sum())
            agreed += int(masks[name][strokes[name]].sum())
        self.assertGreater(agreed / scribbled, 0.75, "scribbled voxels should get their class")
