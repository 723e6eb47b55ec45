"""Wavefront OBJ files for hand meshes: vertices, triangle faces and optional vertex normals.

Hand-written rather than trimesh/open3d (not in the environment) because only the plain subset is needed:
`v`, `vn` and `f` records. Coordinates are written with 9 significant digits, which round-trips float32
exactly (HaMeR's outputs are float32). Faces keep their winding (counter-clockwise seen from outside for
correctly wound meshes: pass left hands' faces through `hamer.mano.faces_for_side`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

PathLike = Union[str, Path]


@dataclass
class ObjMesh:
    vertices: np.ndarray                 # (V, 3) float64
    faces: np.ndarray                    # (F, 3) int64, 0-based
    normals: Optional[np.ndarray] = None  # (V, 3) float64, one per vertex, or None


def write_obj(path: PathLike, vertices: np.ndarray, faces: np.ndarray, normals: Optional[np.ndarray] = None,
              comment: Optional[str] = None) -> Path:
    """Write a triangle mesh (0-based faces) as OBJ; normals, when given, are per vertex. Returns the path."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f'vertices must have shape (V, 3), got {vertices.shape}')
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and not np.issubdtype(faces.dtype, np.integer)):
        raise ValueError(f'faces must be integer triangles of shape (F, 3), got {faces.dtype} {faces.shape}')
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f'face indices must lie in [0, {len(vertices) - 1}], got [{faces.min()}, {faces.max()}]')
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != vertices.shape:
            raise ValueError(f'normals must have the vertices\' shape {vertices.shape}, got {normals.shape}')

    parts = [f'# {line}\n' for line in (comment or '').splitlines()]
    parts.append(('v %.9g %.9g %.9g\n' * len(vertices)) % tuple(vertices.ravel()))
    one_based = faces.astype(np.int64) + 1
    if normals is not None:
        parts.append(('vn %.9g %.9g %.9g\n' * len(normals)) % tuple(normals.ravel()))
        # vertex i uses normal i: "f a//a b//b c//c"
        parts.append(('f %d//%d %d//%d %d//%d\n' * len(faces)) % tuple(np.repeat(one_based, 2, axis=1).ravel()))
    else:
        parts.append(('f %d %d %d\n' * len(faces)) % tuple(one_based.ravel()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(parts))
    return path


def _vertex_index(token: str, count: int, where: str) -> int:
    """0-based index from an OBJ reference (1-based, or negative = relative to the end)."""
    index = int(token)
    resolved = index - 1 if index > 0 else count + index
    if index == 0 or not 0 <= resolved < count:
        raise ValueError(f'index {index} out of range ({count} defined so far)')
    return resolved


def read_obj(path: PathLike) -> ObjMesh:
    """Read an OBJ mesh: polygons are split into triangle fans; texture coordinates are ignored.

    Normals are returned per vertex only when every face corner names one and each vertex always gets the
    same normal (as `write_obj` writes them); otherwise `normals` is None.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'OBJ file {path} not found')
    vertices, normals, faces, corner_normals = [], [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith('#'):
            continue
        where = f'{path}:{number}'
        try:
            if fields[0] == 'v':
                vertices.append([float(v) for v in fields[1:4]])
            elif fields[0] == 'vn':
                normals.append([float(v) for v in fields[1:4]])
            elif fields[0] == 'f':
                refs = [field.split('/') for field in fields[1:]]
                if len(refs) < 3:
                    raise ValueError('a face needs at least 3 vertices')
                corners = [_vertex_index(r[0], len(vertices), where) for r in refs]
                normal_ids = [_vertex_index(r[2], len(normals), where) if len(r) > 2 and r[2] else -1
                              for r in refs]
                for k in range(1, len(corners) - 1):
                    faces.append([corners[0], corners[k], corners[k + 1]])
                    corner_normals.append([normal_ids[0], normal_ids[k], normal_ids[k + 1]])
        except ValueError as exc:
            raise ValueError(f'{where}: cannot read {line.strip()!r} as OBJ: {exc}') from None
    if any(len(v) != 3 for v in vertices) or any(len(n) != 3 for n in normals):
        raise ValueError(f'{path}: every "v" and "vn" record needs 3 coordinates')
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return ObjMesh(vertices, faces, _per_vertex_normals(faces, np.asarray(corner_normals, dtype=np.int64),
                                                        np.asarray(normals, dtype=np.float64), len(vertices)))


def _per_vertex_normals(faces: np.ndarray, corner_normals: np.ndarray, normals: np.ndarray,
                        vertex_count: int) -> Optional[np.ndarray]:
    if len(faces) == 0 or len(normals) == 0 or (corner_normals < 0).any():
        return None
    per_vertex = np.full((vertex_count, 3), np.nan)
    per_vertex[faces.ravel()] = normals[corner_normals.ravel()]
    consistent = np.array_equal(per_vertex[faces.ravel()], normals[corner_normals.ravel()])
    return per_vertex if consistent and not np.isnan(per_vertex).any() else None
