"""Blender (Cycles) renderer of FIB-SEM slices, as in the paper (needs ``porelab[blender]``).

For each slice position ``k`` the structure is cut at ``z = k``: the solid of
``z >= k`` (down to the depth where shine-through has faded) is meshed with
marching cubes, closed by the cut face, and rendered by Cycles on the CPU (GPU
when Blender finds one) with an orthographic camera at ``sem_angle_deg`` from
the face normal. The material is SEM-like rather than photographic: emission
brightest at grazing incidence (the secant law of secondary electrons, via a
Layer Weight "facing" term) with a noise texture, a weak headlight for
shadows, and a homogeneous absorbing medium behind the cut face whose
attenuation length is ``depth_nm``, so material seen through pores darkens
with depth. The render is foreshortened by ``cos(angle)`` along y; it is
resampled back onto the face grid, so ``image[k]`` pairs with ``labels[k]``
like the built-in renderer's. The instrument's artefacts (charging,
curtaining, gradient, blur, drift, noise) are then added by
:func:`pipeline.synth.render_builtin.sem_artifacts` with the same parameters.

``bpy`` keeps one scene per process, so call this from one thread per
process (Ray workers are processes).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.synth.render_builtin import RenderResult, check_render_params, sem_artifacts

__all__ = ["blender_available", "render_blender", "render_blender_signal"]


def blender_available() -> bool:
    """True when ``bpy`` (Blender as a Python module, 4.2 LTS) imports."""
    try:
        import bpy  # type: ignore[import-not-found]  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def _setup_scene(bpy: Any, res_x: int, res_y: int, samples: int, threads: int, p: Mapping[str, float], scale: float) -> Any:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    cy = scene.cycles
    cy.device = "CPU"
    try:  # GPU when Blender finds one
        prefs = bpy.context.preferences.addons["cycles"].preferences
        for kind in ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"):
            try:
                prefs.compute_device_type = kind
                prefs.get_devices()
                if any(d.type == kind for d in prefs.devices):
                    for d in prefs.devices:
                        d.use = d.type == kind
                    cy.device = "GPU"
                    break
            except Exception:  # noqa: BLE001 - this kind is not supported here
                continue
    except Exception:  # noqa: BLE001 - no Cycles preferences: stay on CPU
        pass
    cy.samples = int(samples)
    cy.use_denoising = False
    cy.use_adaptive_sampling = False
    cy.max_bounces = 3
    cy.diffuse_bounces = 2
    cy.volume_bounces = 0
    cy.transparent_max_bounces = 2
    cy.seed = 0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = max(1, int(threads))
    scene.render.resolution_x = int(res_x)
    scene.render.resolution_y = int(res_y)
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.filter_size = 0.8
    scene.view_settings.view_transform = "Raw"
    scene.view_settings.look = "None"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "BW"
    scene.render.image_settings.color_depth = "16"
    world = bpy.data.worlds.new("sem")
    world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs[0].default_value = (p["pore_floor"],) * 3 + (1.0,)
    bg.inputs[1].default_value = 1.0
    scene.world = world
    return scene


def _material(bpy: Any, p: Mapping[str, float], scale: float) -> Any:
    """SEM-like surface: emission by the secant law of secondary electrons, textured.

    brightness = solid_level * texture * (1 + orientation_amp * (sec(i) - sec(a)) / 4),
    ``i`` the angle between surface normal and viewing ray (sec clipped at 5), so
    the flat cut face, seen at the SEM angle ``a``, has brightness solid_level,
    as in the built-in renderer; a little diffuse light adds shadows.
    """
    mat = bpy.data.materials.new("solid")
    mat.use_nodes = True
    nt = mat.node_tree
    nodes, links = nt.nodes, nt.links
    for n in list(nodes):
        nodes.remove(n)

    def math_node(op: str, a_in: Any = None, b_in: Any = None, c_in: Any = None) -> Any:
        node = nodes.new("ShaderNodeMath")
        node.operation = op
        for slot, val in enumerate((a_in, b_in, c_in)):
            if val is None:
                continue
            if isinstance(val, (int, float)):
                node.inputs[slot].default_value = float(val)
            else:
                links.new(val, node.inputs[slot])
        return node.outputs[0]

    out = nodes.new("ShaderNodeOutputMaterial")
    geo = nodes.new("ShaderNodeNewGeometry")
    dot = nodes.new("ShaderNodeVectorMath")
    dot.operation = "DOT_PRODUCT"
    links.new(geo.outputs["Normal"], dot.inputs[0])
    links.new(geo.outputs["Incoming"], dot.inputs[1])
    cos_i = math_node("MAXIMUM", math_node("ABSOLUTE", dot.outputs["Value"]), 0.2)
    sec = math_node("DIVIDE", 1.0, cos_i)
    sec_face = 1.0 / max(math.cos(math.radians(p["sem_angle_deg"])), 0.2)
    orient = math_node("MULTIPLY_ADD", math_node("SUBTRACT", sec, sec_face), p["orientation_amp"] / 4.0, 1.0)
    tex = nodes.new("ShaderNodeTexNoise")
    coords = nodes.new("ShaderNodeTexCoord")
    links.new(coords.outputs["Object"], tex.inputs["Vector"])
    tex.inputs["Scale"].default_value = max(0.01, scale / max(p["texture_nm"], 1e-3))
    tex.inputs["Detail"].default_value = 4.0
    texture = math_node("MULTIPLY_ADD", tex.outputs["Fac"], 2.0 * p["texture_amp"], 1.0 - p["texture_amp"])
    strength = math_node("MULTIPLY", math_node("MULTIPLY", orient, texture), 0.85 * p["solid_level"])
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    links.new(strength, emit.inputs["Strength"])
    diff = nodes.new("ShaderNodeBsdfDiffuse")
    diff.inputs["Color"].default_value = (0.15, 0.15, 0.15, 1.0)
    add = nodes.new("ShaderNodeAddShader")
    links.new(emit.outputs[0], add.inputs[0])
    links.new(diff.outputs[0], add.inputs[1])
    links.new(add.outputs[0], out.inputs["Surface"])
    return mat


def _absorber(bpy: Any, scene: Any, size: tuple[float, float, float], depth_units: float) -> Any:
    """A closed box of absorbing medium behind the cut face (mesh z <= 0)."""
    import bmesh  # type: ignore[import-not-found]

    sz, sy, sx = size
    mesh = bpy.data.meshes.new("medium")
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=1.0)
    for v in bm.verts:  # unit cube centred at 0 -> the box x in [-1, sx], y in [-sy, 1], z in [-sz, 0]
        v.co.x = -1.0 + (v.co.x + 0.5) * (sx + 1.0)
        v.co.y = -sy + (v.co.y + 0.5) * (sy + 1.0)
        v.co.z = -sz + (v.co.z + 0.5) * sz
    bmesh.ops.recalc_face_normals(bm, faces=bm.faces)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new("medium", mesh)
    mat = bpy.data.materials.new("medium")
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    for n in list(nodes):
        nodes.remove(n)
    out = nodes.new("ShaderNodeOutputMaterial")
    vol = nodes.new("ShaderNodeVolumeAbsorption")
    vol.inputs["Density"].default_value = 1.0 / max(depth_units, 1e-3)
    vol.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)  # colour of the medium: black absorbs
    mat.node_tree.links.new(vol.outputs[0], out.inputs["Volume"])
    obj.data.materials.append(mat)
    scene.collection.objects.link(obj)
    return obj


def render_blender_signal(
    labels: np.ndarray,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    params: Mapping[str, float] | None = None,
    *,
    slices: Sequence[int] | None = None,
    samples: int = 8,
    threads: int = 1,
    max_depth_nm: float | None = None,
) -> np.ndarray:
    """Cycles render of cut faces, before instrument artefacts (float32, about 0..1).

    Parameters
    ----------
    labels : uint8 array (z, y, x), 1 = pore
    voxel_size_nm : (float, float, float)
    params : mapping, optional
        Renderer parameters (see :data:`~pipeline.synth.render_builtin.RENDER_DEFAULTS`);
        used here: sem_angle_deg, depth_nm, solid_level, pore_floor,
        texture_amp, texture_nm, orientation_amp.
    slices : sequence of int, optional
        Slice positions to render (default all).
    samples : int
        Cycles samples per pixel.
    threads : int
        CPU threads of Cycles.
    max_depth_nm : float, optional
        Material deeper than this behind the face is left out (default
        ``4 * depth_nm``, where shine-through has faded to 2 %).

    Returns
    -------
    numpy.ndarray of float32, shape (len(slices), y, x)
    """
    import bpy  # type: ignore[import-not-found]
    from mathutils import Vector  # type: ignore[import-not-found]
    from scipy import ndimage as ndi
    from skimage.measure import marching_cubes

    p = check_render_params(params or {})
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x); got shape {lab.shape}")
    Z, Y, X = lab.shape
    vs = np.asarray(voxel_size_nm, dtype=np.float64)
    ks = list(range(Z)) if slices is None else [int(k) for k in slices]
    if any(not 0 <= k < Z for k in ks):
        raise ValueError(f"slices must lie in [0, {Z}); got {ks}")
    unit = float(vs.min())  # one Blender unit = one smallest voxel edge
    a = math.radians(p["sem_angle_deg"])
    depth_nm = max_depth_nm if max_depth_nm is not None else 4.0 * p["depth_nm"]
    dz = max(2, int(math.ceil(depth_nm / vs[0])))
    # the image: x across, y foreshortened by cos(a)
    sx, sy = X * vs[2] / unit, Y * vs[1] / unit
    res_x, res_y = X, max(2, int(round(Y * math.cos(a))))
    scene = _setup_scene(bpy, res_x, res_y, samples, threads, p, unit)
    mat = _material(bpy, p, unit)
    _absorber(bpy, scene, (dz * vs[0] / unit + 2, sy + 2, sx + 2), p["depth_nm"] / unit)
    # camera: orthographic, along d = (cos a in z, sin a in y) -> Blender (0, -sin a, -cos a)
    cam_data = bpy.data.cameras.new("sem")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = sx if res_x >= res_y else sy * math.cos(a)
    cam_data.clip_start = 0.01
    cam_data.clip_end = 10.0 * (sx + sy + dz * vs[0] / unit)
    cam = bpy.data.objects.new("sem", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    d = Vector((0.0, -math.sin(a), -math.cos(a)))
    centre = Vector((sx / 2.0, -sy / 2.0, 0.0))
    dist = 2.0 * (sx + sy)
    cam.location = centre - d * dist
    # rotating the default camera (looking along -Z, up +Y) by -a about X looks along d
    # with the image's up along +Y (the top of the face, y = 0)
    cam.rotation_euler = (-a, 0.0, 0.0)
    # headlight for soft shadows
    sun_data = bpy.data.lights.new("beam", type="SUN")
    sun_data.energy = 0.6
    sun_data.angle = math.radians(20)
    sun = bpy.data.objects.new("beam", sun_data)
    sun.rotation_euler = (-a + 0.15, 0.2, 0.0)
    scene.collection.objects.link(sun)

    solid = (lab == 0).astype(np.float32)
    out = np.empty((len(ks), Y, X), dtype=np.float32)
    tmpdir = Path(tempfile.mkdtemp(prefix="porelab-blender-"))
    obj = None
    try:
        for j, k in enumerate(ks):
            sub = solid[k : k + dz]
            if sub.shape[0] < dz:  # beyond the volume: its mirror image
                reps = [sub]
                rest = dz - sub.shape[0]
                mirror = solid[::-1]
                while rest > 0:
                    take = mirror[:rest]
                    reps.append(take)
                    rest -= take.shape[0]
                    mirror = mirror[::-1]
                sub = np.concatenate(reps)[:dz]
            # close the cut face: empty space in front of it
            vol = np.pad(sub, ((1, 0), (0, 0), (0, 0)), mode="constant")
            # one voxel more on the sides so the mesh covers the whole field of view
            vol = np.pad(vol, ((0, 0), (1, 1), (1, 1)), mode="edge")
            vol = ndi.gaussian_filter(vol, sigma=0.6)
            if obj is not None:
                old = obj.data
                bpy.data.objects.remove(obj, do_unlink=True)
                bpy.data.meshes.remove(old)
                obj = None
            if vol.max() > 0.5 > vol.min():
                verts, faces, _, _ = marching_cubes(vol, level=0.5, spacing=tuple(vs / unit))
                # mesh frame: x -> X, y -> -Y, z (depth from the face) -> -Z; face at z = 0
                # (voxel centres sit half a voxel inside the field of view)
                vx = verts[:, 2] - 0.5 * vs[2] / unit
                vy = verts[:, 1] - 0.5 * vs[1] / unit
                bv = np.column_stack([vx, -vy, -(verts[:, 0] - vs[0] / unit)])
                mesh = bpy.data.meshes.new(f"cut{k}")
                mesh.vertices.add(len(bv))
                mesh.vertices.foreach_set("co", bv.astype(np.float32).ravel())
                nf = len(faces)
                mesh.loops.add(3 * nf)
                mesh.loops.foreach_set("vertex_index", faces[:, ::-1].astype(np.int32).ravel())
                mesh.polygons.add(nf)
                mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * nf, 3, dtype=np.int32))
                mesh.polygons.foreach_set("loop_total", np.full(nf, 3, dtype=np.int32))
                mesh.update()
                mesh.polygons.foreach_set("use_smooth", np.ones(nf, dtype=bool))
                mesh.materials.append(mat)
                obj = bpy.data.objects.new(f"cut{k}", mesh)
                scene.collection.objects.link(obj)
            target = tmpdir / f"slice_{k:05d}.png"
            scene.render.filepath = str(target)
            _quiet_render(bpy)
            img = _read_png16(target)
            # back onto the face grid (undo the cos(a) foreshortening along y)
            out[j] = ndi.zoom(img, (Y / img.shape[0], X / img.shape[1]), order=1, mode="nearest", grid_mode=True)
    finally:
        for f in tmpdir.glob("*"):
            f.unlink()
        tmpdir.rmdir()
    return out


def _quiet_render(bpy: Any) -> None:
    """Render the still image without Cycles' per-sample chatter on stdout."""
    fd = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            bpy.ops.render.render(write_still=True)
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def _read_png16(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("I;16") if im.mode not in ("I;16", "I") else im, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr / 65535.0


def render_blender(
    labels: np.ndarray,
    voxel_size_nm: Sequence[float] = (10.0, 10.0, 10.0),
    params: Mapping[str, float] | None = None,
    seed: int = 0,
    *,
    slices: Sequence[int] | None = None,
    samples: int = 8,
    threads: int = 1,
    artifacts: bool = True,
) -> RenderResult:
    """Render slices with Blender/Cycles, then add the instrument's artefacts.

    Same output as :func:`pipeline.synth.render_builtin.render_builtin`
    (uint8 images, labels registered to them, drift, parameters); with
    ``slices`` only those positions are rendered and returned.

    Raises
    ------
    ImportError
        When ``bpy`` is not installed (``pip install 'porelab[blender]'``).
    """
    if not blender_available():
        raise ImportError("the Blender backend needs bpy 4.2: pip install 'porelab[blender]'")
    p = check_render_params(params or {})
    lab = np.asarray(labels)
    ks = list(range(lab.shape[0])) if slices is None else [int(k) for k in slices]
    signal = render_blender_signal(lab, voxel_size_nm, p, slices=ks, samples=samples, threads=threads)
    rng = np.random.default_rng(seed)
    sub_labels = lab[ks]
    if not artifacts:
        img = np.clip(np.rint(signal * 255.0), 0, 255).astype(np.uint8)
        return RenderResult(image=img, labels=sub_labels.astype(np.uint8), drift_px=np.zeros((len(ks), 2), np.int64), params=dict(p))
    # texture and shading came from Cycles; the artefacts are the built-in renderer's
    return sem_artifacts(signal, sub_labels, voxel_size_nm, p, rng)
