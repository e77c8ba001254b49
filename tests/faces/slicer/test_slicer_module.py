"""Static checks of the 3D Slicer extension files (UnsupervisedSeg/, CMakeLists.txt).

They read the files without running them: the module compiles, every widget it uses exists in its .ui
file, its parameter defaults are the engine's, it reaches the engine only through the command line and
public names, and the CMake files build every script and resource. The module's logic and self-test
run on real MRML in test_slicer_scene.py; its helpers (UnsupervisedSegLib) in test_slicer_lib.py.
"""

import ast
import importlib.metadata
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from UnsupervisedSegLib import install
from UnsupervisedSegLib.command import DEVICES, RunParameters

from unsupervised_seg import SegmentationConfig, __version__

ROOT = Path(__file__).resolve().parents[3]
MODULE_DIR = ROOT / "UnsupervisedSeg"
MODULE_FILE = MODULE_DIR / "UnsupervisedSeg.py"
LIB_DIR = MODULE_DIR / "UnsupervisedSegLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UnsupervisedSeg.ui"


def engine_defaults():
    """The module's parameters as the engine's defaults give them (3D: Slicer volumes)."""
    config, resolved = SegmentationConfig(), SegmentationConfig().resolved(3)
    return {
        "numberOfLabels": config.n_labels or 0,
        "iterations": config.max_iter,
        "detail": resolved.n_clusters,
        "device": config.device,
    }


@pytest.fixture(scope="module")
def module_tree():
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


@pytest.fixture(scope="module")
def ui_widgets():
    """{object name: (class, {dynamic property name: text})} of every widget in the .ui file."""
    widgets = {}
    for widget in ET.parse(UI_FILE).getroot().iter("widget"):
        properties = {p.get("name"): "".join(p.itertext()).strip() for p in widget.findall("property")}
        widgets[widget.get("name")] = (widget.get("class"), properties)
    return widgets


def classes(tree):
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def parameter_fields(tree):
    """{field: default expression or None} of the @parameterNodeWrapper class."""
    node = classes(tree)["UnsupervisedSegParameterNode"]
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list)
    return {s.target.id: s.value for s in node.body if isinstance(s, ast.AnnAssign)}


def test_module_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "module.pyc"), doraise=True)


def test_every_widget_the_module_uses_is_in_the_ui(ui_widgets):
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", MODULE_FILE.read_text()))
    assert used, "the module uses no widget from its .ui file"
    assert used <= set(ui_widgets), sorted(used - set(ui_widgets))


def test_ui_parameter_bindings_name_parameter_node_fields(ui_widgets, module_tree):
    fields = parameter_fields(module_tree)
    bound = {props["SlicerParameterName"]: cls for cls, props in ui_widgets.values() if "SlicerParameterName" in props}
    assert set(bound) <= set(fields), sorted(set(bound) - set(fields))
    # the parameter node wrapper fills a QComboBox from the Choice validator: no items in the .ui
    root = ET.parse(UI_FILE).getroot()
    device = next(w for w in root.iter("widget") if w.get("name") == "deviceComboBox")
    assert not device.findall("item")
    # inputs, parameters and output persist in the parameter node
    assert {
        "inputVolume",
        "scribbleSegmentation",
        "roiNode",
        "outputSegmentation",
        "numberOfLabels",
        "iterations",
        "refineIterations",
        "detail",
        "device",
    } <= set(bound)


def test_defaults_are_the_engines(ui_widgets, module_tree):
    """Parameter node, RunParameters and the .ui spin boxes start from the engine's defaults
    (Refine's iterations are the module's own: the engine has no such default)."""
    fields = parameter_fields(module_tree)
    expected = {**engine_defaults(), "refineIterations": RunParameters().refine_iter}
    for name, value in expected.items():
        assert ast.literal_eval(fields[name]) == value, name
    defaults = RunParameters()
    assert (defaults.n_labels, defaults.max_iter, defaults.n_clusters, defaults.device) == tuple(
        engine_defaults()[k] for k in ("numberOfLabels", "iterations", "detail", "device")
    )
    assert defaults.seed == SegmentationConfig().seed
    for widget, (cls, props) in ui_widgets.items():
        name = props.get("SlicerParameterName")
        if cls == "QSpinBox" and name in expected and "value" in props:
            assert int(props["value"]) == expected[name], widget
    device_annotation = ast.unparse(
        next(
            s.annotation
            for s in classes(module_tree)["UnsupervisedSegParameterNode"].body
            if isinstance(s, ast.AnnAssign) and s.target.id == "device"
        )
    )
    assert re.findall(r"['\"](\w+)['\"]", device_annotation) == list(DEVICES)


def test_module_classes_follow_the_scripted_module_template(module_tree):
    found = classes(module_tree)
    bases = {name: {ast.unparse(b) for b in node.bases} for name, node in found.items()}
    assert "ScriptedLoadableModule" in bases["UnsupervisedSeg"]
    assert {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} <= bases["UnsupervisedSegWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["UnsupervisedSegLogic"]
    assert "ScriptedLoadableModuleTest" in bases["UnsupervisedSegTest"]
    module_init = ast.unparse(found["UnsupervisedSeg"])
    assert "self.parent.categories = ['Segmentation']" in module_init
    assert "10.1109/TIP.2020.3011269" in module_init  # help cites the paper
    test_class = ast.unparse(found["UnsupervisedSegTest"])
    assert "slicer.mrmlScene.Clear()" in test_class and "addVolumeFromArray" in test_class
    assert "updateSegmentBinaryLabelmapFromArray" in test_class
    assert "CI" in (ast.get_docstring(found["UnsupervisedSegTest"]) or "")


def test_module_asks_for_an_engine_version_that_exists():
    assert install.version_at_least(__version__, install.MINIMUM_ENGINE_VERSION)
    assert install.normalise_package_name(importlib.metadata.metadata(install.ENGINE_DISTRIBUTION)["Name"]) == (
        install.ENGINE_DISTRIBUTION
    )


def imports(path):
    """(module names imported, whether importlib's load-by-path is used) of a Python file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return names, "spec_from_file_location" in path.read_text()


def test_module_reaches_the_engine_only_through_its_command_line_and_public_names():
    """No engine internals and no engine files loaded by path: the module and its helpers run
    ``python -m unsupervised_seg`` and use top-level names (the self-test also the bundled sample)."""
    public = {"unsupervised_seg", "unsupervised_seg.demo", "unsupervised_seg.demo.sample", "unsupervised_seg.sample"}
    for path in [MODULE_FILE, *sorted(LIB_DIR.glob("*.py"))]:
        names, by_path = imports(path)
        engine = {n for n in names if n == "unsupervised_seg" or n.startswith("unsupervised_seg.")}
        assert engine <= public, (path.name, sorted(engine - public))
        assert not by_path, path.name
    lib_imports = set().union(*(imports(p)[0] for p in LIB_DIR.glob("*.py") if p.name != "process.py"))
    assert not {n for n in lib_imports if n.split(".")[0] in {"slicer", "qt", "ctk", "vtk", "unsupervised_seg"}}


def cmake_list(text, variable):
    match = re.search(r"set\(" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, variable
    return match.group(1).split()


def test_module_cmake_builds_every_script_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    name = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
    assert name == "UnsupervisedSeg"
    listed = {
        p.replace("${MODULE_NAME}", name)
        for p in cmake_list(text, "MODULE_PYTHON_SCRIPTS") + cmake_list(text, "MODULE_PYTHON_RESOURCES")
    }
    on_disk = {
        p.relative_to(MODULE_DIR).as_posix()
        for p in MODULE_DIR.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or "Resources" in p.parts)
        and "Testing" not in p.parts
    }
    assert listed == on_disk
    assert {f"UnsupervisedSegLib/{name}.py" for name in ("__init__", "install", "command", "process")} <= listed
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS.*\)", text, re.S)
    assert re.search(
        r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)"
        r".*add_subdirectory\(Testing\).*endif\(\)",
        text,
        re.S,
    )
    assert "add_subdirectory(Python)" in (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text()
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_extension_cmake_has_the_metadata_and_layout_of_the_wizard():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(UnsupervisedSeg\)", text, re.M)
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    order = [
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(UnsupervisedSeg)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ]
    positions = [text.index(line) for line in order]
    assert positions == sorted(positions)


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "UnsupervisedSeg.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
        assert len(icon.convert("RGB").getcolors(128 * 128)) > 8  # a drawing, not a blank square
