"""The Slicer module on real MRML: PyPI's slicer-core (Slicer's scene, nodes and module logics, no Qt)
booted by slicer_harness.py with the project's own stand-ins for the application's Qt parts.

What runs here is the module file itself, loaded by path as Slicer loads it: its self-test unchanged,
and its logic on real volume, segmentation and transform nodes, with real engine runs in the
background process the module starts. The widget (Qt) is not here: only the application shows it.
"""

import dataclasses
import logging
import shutil
import signal
import time

import numpy as np
import pytest


def test_module_self_test_passes_unchanged(slicer_app, scene):
    """UnsupervisedSegTest.runTest(), as Reload and Test runs it: Apply, add a scribble class, Refine."""
    started = time.monotonic()
    slicer_app.module.UnsupervisedSegTest().runTest()
    logging.info("UnsupervisedSegTest.runTest() passed in %.1f s", time.monotonic() - started)


# ------------------------------------------------------------------------------------ helpers


def oblique_ijk_to_ras(spacing=(1.5, 2.0, 2.5), origin=(-30.0, 12.5, 47.0), flip_axis=1):
    """An IJK-to-RAS matrix on a rotated (30 degrees about an oblique axis), flipped (one axis
    reversed: a left-handed grid) and offset grid with anisotropic spacing."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    angle = np.deg2rad(30.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    flip = np.ones(3)
    flip[flip_axis] = -1
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(flip * np.asarray(spacing))
    matrix[:3, 3] = origin
    return matrix


def add_volume(array_ijk, ijk_to_ras, name, node_class=None):
    """A volume node from an (I, J, K) array (slicer.util wants (K, J, I))."""
    import slicer

    return slicer.util.addVolumeFromArray(
        np.ascontiguousarray(np.asarray(array_ijk).transpose(2, 1, 0)),
        ijkToRAS=ijk_to_ras,
        name=name,
        nodeClassName=node_class,
    )


def add_segments(segmentation_node, volume, segments):
    """Add [(name, color, (I, J, K) mask or None for an empty segment)] in order; returns their IDs."""
    import slicer

    ids = []
    for name, color, mask in segments:
        segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", name, color)
        if mask is not None:
            slicer.util.updateSegmentBinaryLabelmapFromArray(
                mask.astype(np.uint8).transpose(2, 1, 0), segmentation_node, segment_id, volume
            )
        ids.append(segment_id)
    return ids


def new_segmentation(name, volume=None):
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    if volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return node


def node_counts(scene, exclude=()):
    """{class name: number of nodes} of the scene, leaving out the nodes with IDs in ``exclude``."""
    from collections import Counter

    return Counter(
        scene.GetNthNode(i).GetClassName()
        for i in range(scene.GetNumberOfNodes())
        if scene.GetNthNode(i).GetID() not in exclude
    )


def subject_hierarchy_items(scene):
    import slicer
    import vtk

    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    items = vtk.vtkIdList()
    shNode.GetItemChildren(shNode.GetSceneItemID(), items, True)
    return [shNode.GetItemDataNode(items.GetId(i)) for i in range(items.GetNumberOfIds())]


def ijk_to_ras(node):
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def add_linear_transform(name, matrix):
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.asarray(matrix, float)))
    return node


def blocks(shape=(24, 20, 16), seed=0):
    """A synthetic (I, J, K) image of three slabs along I (dark, middle, bright) with mild noise, and
    the slab index 0, 1, 2 of each voxel."""
    rng = np.random.default_rng(seed)
    slab = np.minimum(np.arange(shape[0]) * 3 // shape[0], 2)[:, None, None] * np.ones(shape, int)
    image = (np.array([20.0, 100.0, 180.0])[slab] + rng.normal(0, 4, shape)).astype(np.float32)
    return image, slab


def stroke(slab, value, k):
    """A stroke inside slab ``value``: its voxels on slice K = k, one voxel in from the slab's faces."""
    from scipy import ndimage

    mask = np.zeros(slab.shape, bool)
    mask[:, :, k] = ndimage.binary_erosion(slab[:, :, k] == value)
    return mask


# ------------------------------------------------------------------------------------ exports


def test_exports_are_read_back_by_the_engine_on_the_nodes_grid(slicer_app, scene, tmp_path):
    """Volume + extra channel, scribbles (the middle segment empty) and ROI on a rotated, flipped,
    offset grid: the engine reads each with the node's geometry and voxels; the scene is unchanged."""
    from unsupervised_seg import load_volume

    image, slab = blocks()
    matrix = oblique_ijk_to_ras()
    volume = add_volume(image, matrix, "T1")
    extra = add_volume(np.sqrt(image), matrix, "T2")
    scribbles = new_segmentation("Scribbles", volume)
    dark, bright = stroke(slab, 0, 4), stroke(slab, 2, 9)
    add_segments(
        scribbles,
        volume,
        [("dark", (0.1, 0.2, 0.9), dark), ("unpainted", (0.2, 0.8, 0.3), None), ("bright", (0.9, 0.8, 0.1), bright)],
    )
    roi_mask = np.zeros(image.shape, bool)
    roi_mask[2:-2, 3:-3, 1:-1] = True
    roi = new_segmentation("ROI", volume)
    (roi_id,) = add_segments(roi, volume, [("body", (1.0, 0.0, 0.0), roi_mask)])
    before = node_counts(scene)
    logic = slicer_app.module.UnsupervisedSegLogic()

    exported = logic.exportInputs(tmp_path, [volume, extra], scribbles, roi, roi_id)
    assert node_counts(scene) == before  # no label map, display node, colour table or storage node left

    channels = load_volume(exported.files.input)
    assert channels.n_channels == 2 and channels.spatial_shape == image.shape
    np.testing.assert_allclose(channels.affine, matrix, atol=1e-4)
    np.testing.assert_allclose(channels.data[0], image, rtol=1e-6)
    np.testing.assert_allclose(channels.data[1], np.sqrt(image), rtol=1e-6)

    assert exported.classNames == {1: "dark", 2: "bright"}  # the empty segment is dropped, the rest renumbered
    assert exported.classColors == {1: (0.1, 0.2, 0.9), 2: (0.9, 0.8, 0.1)}
    labels = load_volume(exported.scribbles)
    np.testing.assert_allclose(labels.affine, matrix, atol=1e-4)
    np.testing.assert_array_equal(labels.data[0], np.select([dark, bright], [1, 2], 0))

    mask = load_volume(exported.mask)
    np.testing.assert_allclose(mask.affine, matrix, atol=1e-4)
    np.testing.assert_array_equal(mask.data[0] > 0, roi_mask)

    # a label map ROI (as the module's self-test uses) gives the same mask
    roi_labelmap = add_volume(roi_mask.astype(np.uint8) * 7, matrix, "ROI label map", "vtkMRMLLabelMapVolumeNode")
    before = node_counts(scene)
    (tmp_path / "again").mkdir()
    again = logic.exportInputs(tmp_path / "again", [volume], None, roi_labelmap)
    assert node_counts(scene) == before
    np.testing.assert_array_equal(load_volume(again.mask).data[0] > 0, roi_mask)
    assert again.scribbles is None and again.classNames == {}
    assert load_volume(again.files.input).n_channels == 1


def world_to_voxel(points_ras, ijk_to_world):
    """(N, 3) RAS points -> (N, 3) integer voxel indices of a grid with IJK-to-world matrix ``ijk_to_world``."""
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    return np.rint((np.linalg.inv(ijk_to_world) @ homogeneous.T).T[:, :3]).astype(int)


def test_transformed_input_is_exported_on_its_own_grid(slicer_app, scene, tmp_path):
    """A volume under a parent transform (rotation + 25 mm shift): the engine gets the volume's own
    grid, and scribbles and a label map ROI that are not under the transform are resampled onto it
    where they lie in world space."""
    import slicer

    from unsupervised_seg import load_volume

    image, slab = blocks()
    matrix = oblique_ijk_to_ras(spacing=(2.0, 2.0, 2.0))
    reference = add_volume(image, matrix, "untransformed copy")  # where the strokes are painted, in world space
    turn = np.eye(4)
    turn[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # 90 degrees about S
    turn[:3, 3] = [25.0, 0.0, 0.0]
    transform = add_linear_transform("registration", turn)
    # the transformed volume's grid is the reference grid moved back by the transform: same world voxels
    volume = add_volume(image, np.linalg.inv(turn) @ matrix, "T1 (registered)")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(slicer_app.module.UnsupervisedSegLogic.ijkToWorld(volume), matrix, atol=1e-9)

    scribbles = new_segmentation("Scribbles")  # not transformed: strokes painted in world space
    dark, bright = stroke(slab, 0, 4), stroke(slab, 2, 9)
    add_segments(scribbles, reference, [("dark", (0.1, 0.2, 0.9), dark), ("bright", (0.9, 0.8, 0.1), bright)])
    roi_mask = np.zeros(image.shape, bool)
    roi_mask[2:-2, 3:-3, 1:-1] = True
    roi = add_volume(roi_mask.astype(np.uint8), matrix, "ROI", "vtkMRMLLabelMapVolumeNode")  # world space too
    slicer.mrmlScene.RemoveNode(reference)
    before = node_counts(scene)

    exported = slicer_app.module.UnsupervisedSegLogic().exportInputs(tmp_path, [volume], scribbles, roi)
    assert node_counts(scene) == before
    written = load_volume(exported.files.input)
    np.testing.assert_allclose(written.affine, ijk_to_ras(volume), atol=1e-4)  # the volume's own grid
    np.testing.assert_allclose(written.data[0], image, rtol=1e-6)
    # same world voxels: the label map and mask lie on the volume's voxels at the strokes' voxel indices
    np.testing.assert_array_equal(load_volume(exported.scribbles).data[0], np.select([dark, bright], [1, 2], 0))
    np.testing.assert_array_equal(load_volume(exported.mask).data[0] > 0, roi_mask)
    # and a voxel's world position, through the transform, is where it was painted
    painted = np.argwhere(bright)[:3]
    world = (matrix @ np.c_[painted, np.ones(len(painted))].T).T[:, :3]
    np.testing.assert_array_equal(world_to_voxel(world, turn @ written.affine), painted)


def test_extra_channel_under_another_transform_is_refused(slicer_app, scene, tmp_path):
    """Same dimensions and IJK-to-RAS matrix, but 25 mm away in world space (another parent
    transform): refused before anything runs, never stacked voxel by voxel. Under the same transform,
    or on a grid that matches in world space, it is accepted."""
    import slicer

    from unsupervised_seg import load_volume

    image, _ = blocks()
    matrix = oblique_ijk_to_ras()
    volume = add_volume(image, matrix, "T1")
    extra = add_volume(np.sqrt(image), matrix, "T2")
    shift = np.eye(4)
    shift[0, 3] = 25.0
    moved = add_linear_transform("moved", shift)
    extra.SetAndObserveTransformNodeID(moved.GetID())
    output = new_segmentation("Result")
    logic = slicer_app.module.UnsupervisedSegLogic()
    before = node_counts(scene)
    with pytest.raises(ValueError, match="T2 is not on the voxel grid of T1 in world space.*different transforms"):
        logic.process(volume, output, extraVolumes=[extra])
    assert node_counts(scene) == before and not logic.isRunning()
    assert not list(slicer_app.temporaryPath.glob(logic.RUN_FOLDER_KEY + "2*"))  # no run folder made

    volume.SetAndObserveTransformNodeID(moved.GetID())  # both under the same transform: one grid
    logic.checkSameGrid([volume, extra])
    volume.SetAndObserveTransformNodeID(None)
    extra.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.linalg.inv(shift) @ matrix))
    logic.checkSameGrid([volume, extra])  # its grid under its transform now meets T1's in world space
    exported = logic.exportInputs(tmp_path, [volume, extra])
    np.testing.assert_allclose(load_volume(exported.files.input).affine, matrix, atol=1e-4)


# ------------------------------------------------------------------------------------ engine runs


def result_node_ids(node):
    """The result segmentation node and the nodes that belong to it (display, storage)."""
    ids = {node.GetID()}
    for index in range(node.GetNumberOfDisplayNodes()):
        ids.add(node.GetNthDisplayNodeID(index))
    if node.GetStorageNodeID():
        ids.add(node.GetStorageNodeID())
    return ids


def check_result_is_the_engines(output, volume, result_file, class_names, class_colors):
    """The output node holds the engine's file: label values, "Cluster k" and scribble names, scribble
    colours (clusters keep the engine's), and each segment's voxels on the input's grid."""
    import slicer
    import slicerio

    in_file = slicerio.read_segmentation(str(result_file))
    labels = in_file["voxels"]  # (I, J, K) on the input's own grid
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ in_file["ijkToLPS"], ijk_to_ras(volume), atol=1e-4)
    file_segments = {s["labelValue"]: s for s in in_file["segments"]}
    segmentation = output.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    values = [s.GetLabelValue() for s in segments]
    assert values == sorted(file_segments) == sorted(int(v) for v in np.unique(labels) if v)
    assert values[: len(class_names)] == list(class_names)
    for segment in segments:
        value = segment.GetLabelValue()
        assert segment.GetName() == class_names.get(value, f"Cluster {value}")
        np.testing.assert_allclose(
            segment.GetColor(), class_colors.get(value, file_segments[value]["color"][:3]), atol=1e-6
        )
        mask = (
            slicer.util.arrayFromSegmentBinaryLabelmap(
                output, segmentation.GetSegmentIdBySegmentName(segment.GetName()), volume
            ).transpose(2, 1, 0)
            > 0
        )
        np.testing.assert_array_equal(mask, labels == value, err_msg=segment.GetName())
    return labels


def test_apply_refine_and_cancel_on_real_nodes(slicer_app, scene, logic, tmp_path):
    """Real engine runs from the logic on a volume under a transform, in a subject-hierarchy folder,
    with an extra channel, scribbles (the middle segment empty) and a ROI segment: Apply, then Refine
    after painting the middle segment, then a cancelled Refine. After each, the scene holds the same
    nodes per class and the same subject-hierarchy items as before, apart from the result; the result
    is the engine's file, under the input's transform and in the input's folder."""
    import slicer

    image, slab = blocks()
    matrix = oblique_ijk_to_ras()
    transform = add_linear_transform(
        "registration", np.array([[1, 0, 0, 5.0], [0, 1, 0, -3.0], [0, 0, 1, 2.0], [0, 0, 0, 1]])
    )
    volume = add_volume(image, matrix, "T1")
    extra = add_volume(np.sqrt(image), matrix, "T2")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = shNode.CreateFolderItem(shNode.GetSceneItemID(), "Study")
    for node in (volume, extra):
        node.SetAndObserveTransformNodeID(transform.GetID())
        shNode.SetItemParent(shNode.GetItemByDataNode(node), study)
    scribbles = new_segmentation("Scribbles", volume)
    scribbles.SetAndObserveTransformNodeID(transform.GetID())
    dark, bright, middle = stroke(slab, 0, 4), stroke(slab, 2, 9), stroke(slab, 1, 12)
    add_segments(
        scribbles,
        volume,
        [("dark", (0.1, 0.2, 0.9), dark), ("unpainted", (0.2, 0.8, 0.3), None), ("bright", (0.9, 0.8, 0.1), bright)],
    )
    roi_mask = np.zeros(image.shape, bool)
    roi_mask[1:-1, 2:-2, 1:-1] = True
    roi = new_segmentation("ROI", volume)
    roi.SetAndObserveTransformNodeID(transform.GetID())
    (roi_id,) = add_segments(roi, volume, [("body", (1.0, 0.0, 0.0), roi_mask)])
    output = new_segmentation("Result")

    files = []
    load = logic.loadResult

    def keep_a_copy(path, *args, **kwargs):  # the run folder is removed after loading: keep the engine's file
        files.append(tmp_path / f"result{len(files)}.seg.nrrd")
        shutil.copyfile(path, files[-1])
        return load(path, *args, **kwargs)

    logic.loadResult = keep_a_copy
    parameters = slicer_app.module.RunParameters(max_iter=20, refine_iter=20, n_clusters=8, device="cpu")
    arguments = {
        "scribbleSegmentation": scribbles,
        "extraVolumes": [extra],
        "roiNode": roi,
        "roiSegmentID": roi_id,
        "parameters": parameters,
    }
    nodes, items = node_counts(scene, exclude=result_node_ids(output)), len(subject_hierarchy_items(scene))

    message = logic.process(volume, output, **arguments)
    assert "labels after" in message
    assert node_counts(scene, exclude=result_node_ids(output)) == nodes
    assert len(subject_hierarchy_items(scene)) == items
    assert output.GetTransformNodeID() == transform.GetID()
    assert shNode.GetItemParent(shNode.GetItemByDataNode(output)) == study
    labels = check_result_is_the_engines(
        output, volume, files[-1], {1: "dark", 2: "bright"}, {1: (0.1, 0.2, 0.9), 2: (0.9, 0.8, 0.1)}
    )
    assert not labels[~roi_mask].any() and labels[roi_mask].all()
    assert (labels[dark & roi_mask] == 1).mean() > 0.9 and (labels[bright & roi_mask] == 2).mean() > 0.9

    # Refine after painting the middle segment: three classes now
    segment_id = scribbles.GetSegmentation().GetSegmentIdBySegmentName("unpainted")
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        middle.astype(np.uint8).transpose(2, 1, 0), scribbles, segment_id, volume
    )
    nodes, items = node_counts(scene, exclude=result_node_ids(output)), len(subject_hierarchy_items(scene))
    assert logic.canRefine([volume, extra], parameters.n_clusters)
    logic.process(volume, output, refine=True, **arguments)
    assert node_counts(scene, exclude=result_node_ids(output)) == nodes
    assert len(subject_hierarchy_items(scene)) == items
    check_result_is_the_engines(
        output,
        volume,
        files[-1],
        {1: "dark", 2: "unpainted", 3: "bright"},
        {1: (0.1, 0.2, 0.9), 2: (0.2, 0.8, 0.3), 3: (0.9, 0.8, 0.1)},
    )
    assert not list(slicer_app.temporaryPath.glob(logic.RUN_FOLDER_KEY + "2*"))  # run folders removed

    cancel_a_refine(slicer_app, logic, volume, output, arguments)


def run_events_until(condition, seconds=120, what=""):
    """Let the stand-in event loop run (the module's QTimer polls the engine's output) until ``condition()``."""
    import slicer

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        slicer.app.processEvents()
        time.sleep(0.02)


def cancel_a_refine(slicer_app, logic, volume, output, arguments):
    """Cancel a Refine running in the background, the GUI's way (output polled by a timer): it ends
    as cancelled, kills the engine, removes its run folder, leaves the result as it was and keeps the
    network the last run saved, so Refine still works."""
    models = list(slicer_app.temporaryPath.glob(logic.MODEL_FOLDER_KEY + "*/model.pt"))
    assert len(models) == 1
    saved, segments = models[0].read_bytes(), output.GetSegmentation().GetNumberOfSegments()
    nodes = node_counts(output.GetScene(), exclude=result_node_ids(output))
    parameters = arguments["parameters"]
    progress, completed = [], []
    logic.process(
        volume,
        output,
        refine=True,
        waitForCompletion=False,
        progressCallback=lambda monitor: progress.append(monitor.status),
        completedCallback=lambda *outcome: completed.append(outcome),
        **{**arguments, "parameters": dataclasses.replace(parameters, refine_iter=10000)},
    )
    engine = logic._run.process  # the engine's Popen, as slicer.util.launchConsoleProcess started it
    assert logic.isRunning() and list(slicer_app.temporaryPath.glob(logic.RUN_FOLDER_KEY + "2*"))
    # Cancel while the engine is still starting: a head-only refinement converges in well under a second once it
    # runs, so waiting for its first iteration would race with its end.
    assert engine.poll() is None
    logic.cancel()
    run_events_until(lambda: completed, what="the cancelled run to end")
    assert [outcome[:2] for outcome in completed] == [(False, logic.CANCELLED)]
    assert engine.poll() == -signal.SIGKILL  # killed (with psutil: its process tree), and reaped
    assert not logic.isRunning()
    assert not list(slicer_app.temporaryPath.glob(logic.RUN_FOLDER_KEY + "2*"))
    assert models[0].read_bytes() == saved and logic.canRefine(
        [volume, *arguments["extraVolumes"]], parameters.n_clusters
    )
    assert output.GetSegmentation().GetNumberOfSegments() == segments
    assert node_counts(output.GetScene(), exclude=result_node_ids(output)) == nodes
    logic.forgetModel()
    assert not list(slicer_app.temporaryPath.glob(logic.MODEL_FOLDER_KEY + "*"))


# ------------------------------------------------------------------------------------ parameters


def test_parameter_node_defaults_are_the_engines(slicer_app, scene):
    """A new scene's parameter node (the @parameterNodeWrapper class on a real vtkMRMLScriptedModuleNode)
    starts from the engine's defaults, and the run built from it uses them."""
    from unsupervised_seg import SegmentationConfig

    config, resolved = SegmentationConfig(), SegmentationConfig().resolved(3)
    logic = slicer_app.module.UnsupervisedSegLogic()
    node = logic.getParameterNode()
    assert node.parameterNode.IsA("vtkMRMLScriptedModuleNode") and node.parameterNode.GetModuleName() == (
        "UnsupervisedSeg"
    )
    assert (node.numberOfLabels, node.iterations, node.detail, node.device) == (
        config.n_labels or 0,
        config.max_iter,
        resolved.n_clusters,
        config.device,
    )
    assert not node.inputVolume and node.extraVolumes == [] and not node.roiNode and node.roiSegmentID == ""
    parameters = logic.runParameters(node)
    assert parameters == slicer_app.module.RunParameters()
    assert (parameters.seed, parameters.n_labels or None, parameters.max_iter) == (
        config.seed,
        config.n_labels,
        config.max_iter,
    )
    with pytest.raises(ValueError):
        node.device = "tpu"  # the Choice the GUI offers
    # the node keeps what the module stores in it
    volume = add_volume(np.zeros((4, 5, 6), np.float32), np.eye(4), "T1")
    node.inputVolume, node.extraVolumes, node.detail = volume, [volume], 12
    again = logic.getParameterNode()
    assert again.inputVolume is volume and again.extraVolumes == [volume] and again.detail == 12


def test_module_description(slicer_app):
    """The module as the application lists it (title, category, help citing the method)."""
    import slicer

    description = slicer.modules.unsupervisedseg.module
    assert description.title == "Unsupervised Segmentation" and description.categories == ["Segmentation"]
    assert "10.1109/TIP.2020.3011269" in description.helpText
