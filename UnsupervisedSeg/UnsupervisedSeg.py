"""3D Slicer module: unsupervised segmentation by differentiable feature clustering, steered by scribbles.

A thin layer of Slicer calls. The segmentation runs in the `unsupervised_seg` engine, started as a
background process (``python -m unsupervised_seg segment ...``); the module's helpers that are not
Slicer calls (what to install, the command line, progress parsing, segment names and colours,
scribble label maps) and its background process live in the ``UnsupervisedSegLib`` package beside
this file. The module never imports the engine's internals: it runs its command line.
"""
import contextlib
import importlib.util
import logging
import os
import shutil
import sys
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
from UnsupervisedSegLib import install
from UnsupervisedSegLib.command import ENGINE_ENVIRONMENT, RunFiles, RunParameters, build_command
from UnsupervisedSegLib.monitor import RunMonitor
from UnsupervisedSegLib.process import BackgroundRun
from UnsupervisedSegLib.segments import compact_scribbles, result_segments, same_grid, scribble_classes, stack_channels


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

    Defaults are the engine's (``SegmentationConfig`` and its 3D defaults; checked in CI), as
    are those of ``UnsupervisedSegLib.command.RunParameters``.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    extraVolumes: list[vtkMRMLScalarVolumeNode]
    scribbleSegmentation: vtkMRMLSegmentationNode
    roiNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]
    roiSegmentID: str = ""
    outputSegmentation: vtkMRMLSegmentationNode
    numberOfLabels: Annotated[int, WithinRange(0, 255)] = 0
    iterations: Annotated[int, WithinRange(1, 10000)] = 1000
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
# UnsupervisedSegLogic
#

class UnsupervisedSegLogic(ScriptedLoadableModuleLogic):
    """Exports the inputs, runs the engine in the background and loads its result. No GUI."""

    CANCELLED = "Cancelled."
    INSTALL_QUESTION = ("Unsupervised Segmentation needs its engine (the Python package unsupervised-seg, with "
                        "PyTorch and MONAI) in Slicer's Python. It will be downloaded and installed now, which "
                        "can take several minutes and a few hundred MB.\n\nInstall it?")
    RUN_FOLDER_KEY = "UnsupervisedSeg"  # each run's temporary folder (removed when the run ends)
    MODEL_FOLDER_KEY = "UnsupervisedSegModel"  # the last successful run's network, kept for Refine

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.logCallback = None
        self._run = None
        self._modelFolder = None
        self._modelKey = None

    def getParameterNode(self):
        return UnsupervisedSegParameterNode(super().getParameterNode())

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    @staticmethod
    def runParameters(parameterNode) -> RunParameters:
        """The engine run's parameters from the module's parameter node."""
        return RunParameters(n_labels=parameterNode.numberOfLabels, max_iter=parameterNode.iterations,
                             refine_iter=parameterNode.refineIterations, n_clusters=parameterNode.detail,
                             device=parameterNode.device)

    # ---- the engine in Slicer's Python

    @staticmethod
    def engineInstalled() -> bool:
        """Whether the engine and its dependencies import, at MINIMUM_ENGINE_VERSION or later."""
        try:
            import unsupervised_seg

            unsupervised_seg.Segmenter  # noqa: B018  (imports torch and MONAI)
            return install.version_at_least(unsupervised_seg.__version__, install.MINIMUM_ENGINE_VERSION)
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

        source = install.engine_install_source(os.path.dirname(__file__))
        self.log(f"Installing the engine from {source} (without its dependencies)...")
        slicer.util.pip_install(["--no-deps", "--upgrade", source])
        importlib.invalidate_caches()

        self._installTorch()

        requirements, kept = install.requirements_to_install(metadata.requires(install.ENGINE_DISTRIBUTION))
        try:
            import psutil  # noqa: F401  (Cancel kills the engine's process tree with it)
        except ImportError:
            requirements.append("psutil")
        folder = Path(slicer.util.tempDirectory(key="UnsupervisedSegInstall"))
        constraints = folder / "constraints.txt"
        constraints.write_text(install.pin_constraints(install.installed_versions()))
        self.log(f"Keeping Slicer's own {', '.join(kept)}; installing {', '.join(requirements)}...")
        try:
            slicer.util.pip_install([*requirements, "-c", str(constraints)])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        importlib.invalidate_caches()
        if not self.engineInstalled():
            raise RuntimeError("The engine was installed but cannot be imported; see the Python console.")
        self.log("The engine is installed.")
        return True

    def _installTorch(self) -> None:
        requirement = f">={install.MINIMUM_TORCH_VERSION}"
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
        version = install.installed_versions(["torch"])["torch"]
        if not install.version_at_least(version, install.MINIMUM_TORCH_VERSION):
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
        if self.isRunning():
            raise RuntimeError("A segmentation is already running.")
        if not inputVolume:
            raise ValueError("Select an input volume.")
        if not outputSegmentation:
            raise ValueError("Select or create an output segmentation.")
        if outputSegmentation in (scribbleSegmentation, roiNode):
            raise ValueError("The output segmentation must not be the scribble or ROI segmentation: "
                             "each run replaces the output's segments.")
        parameters = parameters or RunParameters()
        volumes = [inputVolume] + [v for v in extraVolumes if v and v != inputVolume]
        self.checkSameGrid(volumes)
        if refine and not self.canRefine(volumes, parameters.n_clusters):
            raise ValueError("Refine continues a previous run: press Apply first (same volumes and detail).")

        folder = Path(slicer.util.tempDirectory(key=self.RUN_FOLDER_KEY))
        try:
            exported = self.exportInputs(folder, volumes, scribbleSegmentation, roiNode, roiSegmentID)
            command = build_command(
                exported.files.input, exported.scribbles, exported.files.output,
                parameters.for_refine() if refine else parameters,
                model_in=Path(self._modelFolder) / "model.pt" if refine else None, model_out=exported.files.model,
                python_executable=self.pythonExecutable(), mask_path=exported.mask, class_names=exported.classNames)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        self.log(("Refining" if refine else "Segmenting") + f" {inputVolume.GetName()}: {' '.join(command)}")
        # one run: its temporary files, where the result goes, the scribble class tables, its progress
        task = SimpleNamespace(folder=folder, files=exported.files, volumes=volumes, output=outputSegmentation,
                               classNames=exported.classNames, classColors=exported.classColors,
                               key=self._key(volumes, parameters.n_clusters), monitor=RunMonitor(),
                               completedCallback=completedCallback)
        try:
            self._run = BackgroundRun(command, ENGINE_ENVIRONMENT)
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
                self.loadResult(task.monitor.written or task.files.output, task.output, task.volumes[0],
                                task.classNames, task.classColors)
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
            self._modelFolder = slicer.util.tempDirectory(key=self.MODEL_FOLDER_KEY)
        os.replace(task.files.model, Path(self._modelFolder) / "model.pt")
        self._modelKey = task.key

    # ---- Slicer data in and out

    @staticmethod
    def ijkToWorld(volumeNode):
        """The volume's IJK-to-world matrix (4x4 array): its IJK-to-RAS matrix under its parent
        transforms, or None when a transform on the way to world is not linear."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        ijkToRAS = slicer.util.arrayFromVTKMatrix(matrix)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is None:
            return ijkToRAS
        if not transformNode.IsTransformToWorldLinear():
            return None
        toWorld = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(toWorld)
        return slicer.util.arrayFromVTKMatrix(toWorld) @ ijkToRAS

    @classmethod
    def checkSameGrid(cls, volumes) -> None:
        """Raise ValueError unless every extra channel lies voxel for voxel on the input volume's grid
        in world space: same dimensions and IJK-to-world matrix, parent transforms included (a
        volume under another transform is refused even when its own matrix matches)."""
        reference = volumes[0]
        referenceMatrix = cls.ijkToWorld(reference)
        for volume in volumes[1:]:
            matrix = cls.ijkToWorld(volume)
            if referenceMatrix is None or matrix is None:
                # non-linear transforms: the same transform node over the same local grid, or nothing
                aligned = reference.GetTransformNodeID() == volume.GetTransformNodeID()
                localReference, localVolume = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
                reference.GetIJKToRASMatrix(localReference)
                volume.GetIJKToRASMatrix(localVolume)
                aligned = aligned and same_grid(reference.GetImageData().GetDimensions(),
                                                slicer.util.arrayFromVTKMatrix(localReference),
                                                volume.GetImageData().GetDimensions(),
                                                slicer.util.arrayFromVTKMatrix(localVolume))
            else:
                aligned = same_grid(reference.GetImageData().GetDimensions(), referenceMatrix,
                                    volume.GetImageData().GetDimensions(), matrix)
            if not aligned:
                transformed = reference.GetTransformNodeID() != volume.GetTransformNodeID()
                raise ValueError(
                    f"{volume.GetName()} is not on the voxel grid of {reference.GetName()} in world space"
                    + (" (they are under different transforms)" if transformed else "")
                    + ": resample it first (Resample Scalar/Vector/DWI Volume module, with "
                    f"{reference.GetName()} as reference" + (", after hardening its transform" if transformed
                                                             else "") + ").")

    @staticmethod
    @contextlib.contextmanager
    def _temporaryNodes():
        """Remove, at the end of the block, every node added to the scene inside it: the label maps
        made for an export with their display nodes and the colour table ExportSegmentsToLabelmapNode
        creates for each, vector volumes, storage nodes. Nothing this module exports stays in the
        user's scene (and is saved with it)."""
        scene = slicer.mrmlScene
        before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
        try:
            yield
        finally:
            added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
            for node in reversed([n for n in added if n.GetID() not in before]):
                if scene.IsNodePresent(node):
                    scene.RemoveNode(node)

    def exportInputs(self, folder, volumes, scribbleSegmentation=None, roiNode=None, roiSegmentID=""):
        """Write what the engine reads into ``folder``: the volumes (one NRRD; a vector NRRD with one
        component per volume when there are extra channels), the scribble segments as a label map and
        the ROI as a mask, both on the input volume's grid. The scene is left as it was.

        Returns SimpleNamespace(files (RunFiles), scribbles (path or None), mask (path or None),
        classNames {k: name}, classColors {k: rgb}).
        """
        files = RunFiles(Path(folder))
        inputVolume = volumes[0]
        with self._temporaryNodes():
            self._writeInput(volumes, files.input)
            classNames, classColors, scribblePath = {}, {}, None
            if scribbleSegmentation:
                exclude = roiSegmentID if roiNode is scribbleSegmentation else None
                classNames, classColors, scribblePath = self._exportScribbles(
                    scribbleSegmentation, inputVolume, files.scribbles, exclude)
            maskPath = self._exportRoi(roiNode, roiSegmentID, inputVolume, files.mask) if roiNode else None
        return SimpleNamespace(files=files, scribbles=scribblePath, mask=maskPath, classNames=classNames,
                               classColors=classColors)

    def _writeInput(self, volumes, path) -> None:
        """The input volume as NRRD; with extra channels, one vector NRRD (one component per volume)."""
        if len(volumes) == 1:
            self._writeVolume(volumes[0], path)
            return
        matrix = vtk.vtkMatrix4x4()
        volumes[0].GetIJKToRASMatrix(matrix)
        channels = stack_channels([slicer.util.arrayFromVolume(v) for v in volumes])
        vectorNode = slicer.util.addVolumeFromArray(channels, ijkToRAS=slicer.util.arrayFromVTKMatrix(matrix),
                                                    name="UnsupervisedSeg channels",
                                                    nodeClassName="vtkMRMLVectorVolumeNode")
        self._writeVolume(vectorNode, path)

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
        """A new label map node on the reference volume's grid: segment i -> label i + 1.
        ExportSegmentsToLabelmapNode resamples through the nodes' transforms."""
        labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        for segmentID in segmentIDs:
            ids.InsertNextValue(segmentID)
        if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmapNode, referenceVolume):
            raise RuntimeError(f"Could not export the segments of {segmentationNode.GetName()}")
        return labelmapNode

    def _exportScribbles(self, segmentationNode, referenceVolume, path, excludeSegmentID=None):
        """Write the scribble segments as a label map; returns (class names, class colours, path)."""
        segmentation = segmentationNode.GetSegmentation()
        segmentIDs = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        segmentIDs = [s for s in segmentIDs if s != excludeSegmentID]
        if not segmentIDs:
            return {}, {}, None
        names, colors = scribble_classes(
            [(segmentation.GetSegment(s).GetName(), segmentation.GetSegment(s).GetColor()) for s in segmentIDs])
        labelmapNode = self._exportToLabelmap(segmentationNode, segmentIDs, referenceVolume)
        labels, names, colors = compact_scribbles(slicer.util.arrayFromVolume(labelmapNode), names, colors)
        slicer.util.updateVolumeFromArray(labelmapNode, labels)
        self._writeVolume(labelmapNode, path)
        return names, colors, path

    def _exportRoi(self, roiNode, roiSegmentID, referenceVolume, path):
        """Write the region of interest (non-zero inside) on the reference volume's grid."""
        if roiNode.IsA("vtkMRMLLabelMapVolumeNode"):
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(roiNode, segmentationNode)
            roiSegmentID = ""
        else:
            segmentationNode = roiNode
        segmentation = segmentationNode.GetSegmentation()
        segmentIDs = ([roiSegmentID] if roiSegmentID and segmentation.GetSegment(roiSegmentID)
                      else [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())])
        if not segmentIDs:
            raise ValueError(f"The region of interest {roiNode.GetName()} is empty.")
        labelmapNode = self._exportToLabelmap(segmentationNode, segmentIDs, referenceVolume)
        if not slicer.util.arrayFromVolume(labelmapNode).any():
            raise ValueError(f"The region of interest {roiNode.GetName()} does not overlap "
                             f"{referenceVolume.GetName()}.")
        self._writeVolume(labelmapNode, path)
        return path

    def loadResult(self, path, outputNode, inputVolume, classNames=None, classColors=None) -> None:
        """Read the engine's .seg.nrrd into ``outputNode`` (its segments are replaced): scribble
        classes keep their names and colours, other clusters are "Cluster k" in the engine's colours.
        The output follows the input volume: its geometry, its transform, its subject-hierarchy folder."""
        outputNode.GetSegmentation().RemoveAllSegments()
        with self._temporaryNodes():
            storageNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            storageNode.SetFileName(str(path))
            if not storageNode.ReadData(outputNode):
                raise RuntimeError(f"Slicer could not read {storageNode.GetFileName()}")
        segmentation = outputNode.GetSegmentation()
        byValue = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            byValue[segment.GetLabelValue()] = segment
        for entry in result_segments({value: segment.GetColor() for value, segment in byValue.items()},
                                     classNames, classColors):
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


#
# UnsupervisedSegTest
#

class UnsupervisedSegTest(ScriptedLoadableModuleTest):
    """The whole flow: volume and scribbles in the scene, segmentation node out.

    In Slicer: Reload and Test, or the command line in UnsupervisedSeg/README.md; it installs the
    engine on first use. CI runs it unchanged on a real MRML scene from PyPI's slicer-core (Slicer's
    MRML and module logics without Qt; tests/faces/slicer/), with the engine installed.
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
        try:
            from unsupervised_seg.demo import sample
        except ImportError:  # engines before the demo/ package
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
        parameters = RunParameters(max_iter=30, n_clusters=16)  # Refine: the default iterations

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
