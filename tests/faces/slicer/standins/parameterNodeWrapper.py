"""Stand-in for ``slicer.parameterNodeWrapper`` of the 3D Slicer application, written for this
project's tests: typed attributes stored in a vtkMRMLScriptedModuleNode, as far as a module's logic uses them.

Supported annotations: int, float, str, bool, a MRML node class, ``Union``/``Optional`` of node classes,
``list[node class]``, each optionally ``Annotated`` with ``WithinRange`` or ``Choice``. Values are
parameters of the node (text), nodes are node references (a list: several references of one role).
Connecting widgets (``connectGui``) needs the application's Qt and is refused.
"""

import typing

import slicer


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value} is not within [{self.minimum}, {self.maximum}]")


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


_SCALARS = {int: int, float: float, str: str, bool: lambda text: text == "True"}


def _isNodeClass(kind):
    return isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)


class _Parameter:
    """One attribute of a wrapped class: how it is stored, its default and its validators."""

    def __init__(self, name, annotation, default):
        self.name, self.validators = name, []
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extras = typing.get_args(annotation)
            self.validators = [e for e in extras if hasattr(e, "validate")]
        self.isList = typing.get_origin(annotation) is list
        if self.isList:
            (annotation,) = typing.get_args(annotation)
        kinds = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
        self.nodeClasses = tuple(k for k in kinds if _isNodeClass(k))
        if self.nodeClasses:
            self.kind = None
            self.default = [] if self.isList else None
        elif annotation in _SCALARS and not self.isList:
            self.kind = annotation
            self.default = annotation() if default is _MISSING else default
        else:
            raise TypeError(f"parameterNodeWrapper stand-in: {name}: unsupported annotation {annotation!r}")

    def _checkNode(self, node):
        if node is not None and not isinstance(node, self.nodeClasses):
            raise TypeError(
                f"{self.name}: {node.GetClassName()} is not one of {[c.__name__ for c in self.nodeClasses]}"
            )

    def read(self, parameterNode):
        if self.nodeClasses:
            if self.isList:
                return [
                    parameterNode.GetNthNodeReference(self.name, i)
                    for i in range(parameterNode.GetNumberOfNodeReferences(self.name))
                ]
            return parameterNode.GetNodeReference(self.name)
        return _SCALARS[self.kind](parameterNode.GetParameter(self.name))

    def write(self, parameterNode, value):
        if self.nodeClasses:
            nodes = list(value or []) if self.isList else [value]
            for node in nodes:
                self._checkNode(node)
            parameterNode.RemoveNodeReferenceIDs(self.name)
            for node in nodes:
                if node is not None:
                    parameterNode.AddNodeReferenceID(self.name, node.GetID())
            return
        value = self.kind(value)
        for validator in self.validators:
            validator.validate(value)
        parameterNode.SetParameter(self.name, str(value))


_MISSING = object()


def parameterNodeWrapper(cls):
    """Class decorator: ``cls(parameterNode)`` reads and writes its annotated attributes in the node;
    parameters the node does not have yet get their defaults."""
    parameters = {
        name: _Parameter(name, annotation, cls.__dict__.get(name, _MISSING))
        for name, annotation in typing.get_type_hints(cls, include_extras=True).items()
    }

    def __init__(self, parameterNode):
        object.__setattr__(self, "parameterNode", parameterNode)
        for parameter in parameters.values():
            if parameter.kind is not None and not parameterNode.GetParameter(parameter.name):
                parameter.write(parameterNode, parameter.default)

    def __getattribute__(self, name):
        if name in parameters:
            return parameters[name].read(object.__getattribute__(self, "parameterNode"))
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if name not in parameters:
            raise AttributeError(f"{cls.__name__} has no parameter {name}")
        parameters[name].write(self.parameterNode, value)

    def connectGui(self, gui):
        raise NotImplementedError("connecting widgets needs the Slicer application's Qt")

    for name in parameters:
        if name in cls.__dict__:
            delattr(cls, name)
    cls.__init__, cls.__getattribute__, cls.__setattr__ = __init__, __getattribute__, __setattr__
    cls.connectGui = connectGui
    cls.disconnectGui = lambda self, tag: None
    cls.allParameters = dict(parameters)
    return cls
