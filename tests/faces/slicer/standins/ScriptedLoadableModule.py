"""Stand-in for ``slicer.ScriptedLoadableModule`` of the 3D Slicer application, written for this
project's tests: the base classes of a scripted module, as far as a module's logic and self-test use them.

The widget base class needs the application's Qt and refuses to set up here.
"""

import logging
import os
import unittest

import slicer


class ScriptedLoadableModule:
    """The module's description. ``parent`` stands for the application's qSlicerScriptedLoadableModule:
    any object with a ``path`` attribute (the module file) to which title, categories, ... are added."""

    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""

    @property
    def path(self):
        return self.parent.path

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    """The widget base class: its ``setup`` builds Qt widgets, which only the application has."""

    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[: -len("Widget")]

    def setup(self):
        raise NotImplementedError(
            "module widgets need the Slicer application's Qt; the slicer-core harness "
            "runs the logic and the self-test only"
        )

    def resourcePath(self, filename):
        module = slicer.modules.get(self.moduleName.lower())
        return os.path.join(os.path.dirname(module.path), "Resources", filename)


class ScriptedLoadableModuleLogic:
    """Logic base class: the module's parameter node is a singleton vtkMRMLScriptedModuleNode of the scene."""

    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[: -len("Logic")]

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node:
            return node
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(self.moduleName)
        node.SetModuleName(self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        self.setDefaultParameters(node)
        return slicer.mrmlScene.AddNode(node)

    def setDefaultParameters(self, parameterNode):
        pass


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Self-test base class. ``delayDisplay`` logs the message and lets timers run (no popup here)."""

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        logging.info(message)
        slicer.app.processEvents()

    def takeScreenshot(self, name, description, type=-1):
        logging.info(f"Screenshot {name} ({description}) skipped: no views without the application")
