r"""``PoincareDiskView``: points in the Poincaré disk, one query, and geodesic arcs weighted by attention.

The weights are :class:`~ruvattn.HyperbolicAttention`'s, ``softmax(-d_c(q, k_j)/τ)``, always
computed in the points' full dimension ``d``; the picture is 2-D:

- ``d = 2``: the disk itself (``d = 1``: the points on the x-axis);
- ``projection="pca"``: ``logmap0`` to the tangent space at the origin, the two leading principal
  directions of those tangent vectors (numpy SVD, *uncentred*, so the origin -- where a
  re-centred query sits -- stays at the centre), and ``expmap0`` into the 2-D disk;
- ``projection="first2"``: the first two coordinates (dropping coordinates never lengthens a
  vector, so they are inside the disk; the library's ``proj`` guards the boundary).

Arcs from the query to each key are geodesics of the 2-D disk,
:math:`\gamma(t) = \exp_x(t \log_x y)`, sampled at :data:`ARC_SAMPLES` points with the library's
:class:`~ruvattn.geometry.PoincareBall` and binned by weight like the edges of
:class:`~ruvattn.widgets.neighbourhood.NeighbourhoodView`.

**Click a point** to re-centre on it by a Möbius translation, :math:`x \mapsto (-a) \oplus_c x`
(an isometry that takes ``a`` to the origin); the translated coordinates become the view's points
and the clicked point the query. The result is projected into the ball with the library's margin
(radius at most ``(1 - 1e-5)/√c`` in float64), so a point the translation would carry closer to
the boundary than that is pulled in and its distance from the new centre shrinks: exact for
distances up to about ``12/√c`` from the clicked point, compressed beyond.
:meth:`PoincareDiskView.reset` returns to the input points.

**Controls.** The curvature and temperature sliders are the mechanism's own parameter controls,
derived from their constraints (:func:`~ruvattn.widgets._controls.controls_for`: curvature in
``(-inf, 0)``, temperature in ``(0, inf)`` on a log scale); moving one calls ``set_params`` on
the view's :class:`~ruvattn.HyperbolicAttention`.

**Curvature.** The points are kept at a *base* curvature (the one they were given or translated
at). At another curvature ``c'`` they are ``expmap0_c'(logmap0_c(x))``: the same tangent vectors
at the origin, mapped into the new ball (always inside: ``expmap0`` projects to radius
``(1 - 1e-5)/√c'``), so moving the slider back restores them exactly. With ``euclidean=True`` the
inputs are tangent vectors to begin with: the points are ``expmap0`` of them at the slider's curvature
(until a click translates them; from then on the translated points are the base).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
from plotly.callbacks import InputDeviceState, Points

from ruvattn import analysis
from ruvattn.errors import EmptyInput, InvalidConfig, NumericalInstability
from ruvattn.geometry import PoincareBall
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.mechanisms import HyperbolicAttention

from ._base import AttentionWidget, as_matrix, plane_layout, weight_colorscale
from .neighbourhood import GL_EDGES, N_BINS, bin_styles, bin_weights, check_id, wrap_title

__all__ = ["ARC_SAMPLES", "PROJECTIONS", "PoincareDiskView", "PoincareState", "geodesic_arcs"]

PROJECTIONS = ("pca", "first2")
#: samples along each geodesic arc (both ends included)
ARC_SAMPLES = 24


def geodesic_arcs(ball: PoincareBall, x: np.ndarray, ys: np.ndarray, samples: int = ARC_SAMPLES) -> np.ndarray:
    """``(n, samples, dim)`` points of the geodesics from ``x`` to each row of ``ys``: ``exp_x(t log_x y)``."""
    ys = np.atleast_2d(ys)
    if ys.shape[0] == 0:
        return np.zeros((0, samples, ys.shape[1]))
    v = np.atleast_2d(ball.logmap(x, ys))
    t = np.linspace(0.0, 1.0, samples)
    steps = (t[None, :, None] * v[:, None, :]).reshape(-1, ys.shape[1])
    return np.atleast_2d(ball.expmap(x, steps, project=False)).reshape(ys.shape[0], samples, ys.shape[1])


@dataclass(frozen=True)
class PoincareState:
    """What the disk shows; ``points`` are the full ``d``-dimensional ball points at ``curvature``."""

    query: int
    curvature: float  # signed, < 0
    temperature: float
    radius: float  # 1/sqrt(c)
    points: np.ndarray  # (N, d) current points (translated if a point was clicked)
    key_ids: np.ndarray  # (n,) the keys the query attends over
    weights: np.ndarray  # (n,) HyperbolicAttention weights, full dimension
    distances: np.ndarray  # (n,) d_c(query, key), full dimension
    shown: np.ndarray  # (N, 2) the points in the 2-D disk
    arcs: np.ndarray  # (n, ARC_SAMPLES, 2) geodesics from shown[query] to shown[key]
    arc_bin: np.ndarray  # (n,) weight bin per arc
    bin_edges: np.ndarray  # (N_BINS + 1,)
    projection: str  # "disk" (d <= 2), "pca" or "first2"
    explained: float  # share of the tangent vectors' squared norm the PCA plane keeps (nan otherwise)
    translated: bool  # the points were Möbius-translated by a click
    stats: dict[str, float]


class PoincareDiskView(AttentionWidget):
    """Hyperbolic attention of one query over the other points, drawn in the Poincaré disk.

    Parameters
    ----------
    points : (N, d) array
        Points inside the ball of radius ``1/sqrt(c)`` (``c = -curvature``), or Euclidean vectors
        with ``euclidean=True`` (mapped in with ``expmap0``).
    query : the attending point.
    curvature : signed curvature < 0 (the ``"curvature"`` slider).
    temperature : τ > 0 (the ``"temperature"`` slider).
    projection : "pca" or "first2", how ``d > 2`` dimensions are drawn (see the module docstring).
    euclidean : the points are Euclidean (tangent) vectors.
    neighbours : optional neighbour list (any :func:`~ruvattn.graph.as_neighbours` form, one row per
        point); the query attends over its own row instead of all other points.
    height : figure height in pixels.
    """

    name = "PoincareDiskView"

    def __init__(
        self,
        points: Any,
        *,
        query: int = 0,
        curvature: float = -1.0,
        temperature: float = 1.0,
        projection: str = "pca",
        euclidean: bool = False,
        neighbours: Any = None,
        height: int = 620,
    ) -> None:
        super().__init__()
        raw = as_matrix(points, "points", self.name).astype(np.float64)
        n, d = raw.shape
        self.mechanism = HyperbolicAttention(d, curvature=curvature, temperature=temperature)  # validates both
        ball = PoincareBall(self.mechanism.curvature)
        if projection not in PROJECTIONS:
            raise InvalidConfig(f"{self.name}: projection must be one of {PROJECTIONS}, got {projection!r}.")
        query = check_id(self.name, "query (a point id)", query, n)
        if euclidean:
            start: tuple[float | None, np.ndarray] = (None, raw)  # tangent vectors at the origin
        else:
            norms = np.linalg.norm(raw, axis=1)
            radius = 1.0 / np.sqrt(ball.c)
            if not np.isfinite(norms).all():
                bad = int(np.flatnonzero(~np.isfinite(norms))[0])
                raise NumericalInstability(f"{self.name}: points must be finite; point {bad} has NaN or inf.")
            if (norms >= radius).any():
                worst = int(np.argmax(norms))
                raise InvalidConfig(
                    f"{self.name}: points must lie inside the ball of radius 1/sqrt(c) = {radius:.4g}; point {worst} "
                    f"has norm {norms[worst]:.4g}. Pass euclidean=True to map Euclidean vectors in with expmap0, "
                    "or pull them inside with PoincareBall.proj."
                )
            start = (float(curvature), raw)
        self.dim = d
        self.projection = projection
        self.euclidean = bool(euclidean)
        self.neighbours: NeighbourList | None = (
            None if neighbours is None else as_neighbours(self.name, neighbours, n, n)
        )
        # the points as (curvature, ball points), or (None, tangent vectors at the origin) for euclidean=True
        self._initial: tuple[float | None, np.ndarray] = start
        self._base: tuple[float | None, np.ndarray] = start
        self.name = f"PoincareDiskView · {d}-D"
        self.controls["query"] = ipw.BoundedIntText(value=int(query), min=0, max=n - 1, description="query")
        # the two parameters of the drawn formula softmax(-d_c/τ); the others would change what the arcs mean
        self._add_parameter_controls(self.mechanism, n, only=("curvature", "temperature"))
        self.reset_button = ipw.Button(description="reset translation", tooltip="back to the input points")
        self.reset_button.on_click(lambda _: self.reset())
        self._build_figure(height)
        self._finish(extra=[self.reset_button])

    # -- figure -------------------------------------------------------------------------
    def _build_figure(self, height: int) -> None:
        fig = go.FigureWidget()
        fig.add_scatter(x=[], y=[], mode="lines", name="boundary", line={"color": "black", "width": 1.5},
                        hoverinfo="skip", showlegend=False)  # fmt: skip
        for kind in (go.Scatter, go.Scattergl):
            for k, (colour, width) in enumerate(bin_styles()):
                fig.add_trace(
                    kind(
                        x=[], y=[], mode="lines", line={"color": colour, "width": width}, name=f"bin {k}",
                        showlegend=False,
                        hovertemplate="arc query → point %{customdata:d}<extra></extra>",
                    )
                )  # fmt: skip
        fig.add_scatter(
            x=[], y=[], mode="markers", name="other points", marker={"color": "#bbbbbb", "size": 5},
            hovertemplate="point %{customdata[0]:d} (not a key)<extra></extra>",
        )  # fmt: skip
        fig.add_scatter(
            x=[], y=[], mode="markers", name="keys",
            marker={"colorscale": weight_colorscale, "colorbar": {"title": "weight"}, "line": {"width": 0.5}},
            hovertemplate="point %{customdata[0]:d}<br>weight %{customdata[1]:.4f}<br>d = %{customdata[2]:.4f}"
            "<extra></extra>",
        )  # fmt: skip
        fig.add_scatter(
            x=[], y=[], mode="markers", name="query",
            marker={"color": "#d62728", "size": 18, "symbol": "star", "line": {"width": 1, "color": "black"}},
            hovertemplate="query %{customdata[0]:d}<extra></extra>",
        )  # fmt: skip
        fig.update_layout(**plane_layout(height, "arc weight", top=70))
        self.figure = fig
        for trace in self.point_traces:
            trace.on_click(self._on_point_click)

    @property
    def arc_traces(self) -> tuple[Any, ...]:
        """The ``2 · N_BINS`` arc traces: ``Scatter`` bins, then ``Scattergl`` bins (one set is empty)."""
        return tuple(self.figure.data[1 : 1 + 2 * N_BINS])

    @property
    def point_traces(self) -> tuple[Any, Any, Any]:
        """``(other points, keys, query)`` marker traces; ``customdata[:, 0]`` is the point id."""
        others, keys, query = self.figure.data[1 + 2 * N_BINS :]
        return others, keys, query

    def _on_point_click(self, trace: Any, points: Points, state: InputDeviceState | None = None) -> None:
        """plotly's click callback: re-centre on the clicked point (plotly calls it for every trace)."""
        if not points.point_inds:
            return
        self.recentre(int(np.asarray(trace.customdata)[points.point_inds[0], 0]))

    # -- actions ------------------------------------------------------------------------
    @property
    def points(self) -> np.ndarray:
        """The current ``(N, d)`` points at the shown curvature (translated after a click)."""
        return self.state.points

    def recentre(self, index: int) -> PoincareDiskView:
        """Möbius-translate every point by ``(-a) ⊕_c ·`` with ``a`` point ``index``, and make it the query."""
        index = check_id(f"{self.name}.recentre", "index (a point id)", index, self.state.points.shape[0])
        ball = PoincareBall(self.state.curvature)
        a = self.state.points[index]
        moved = np.atleast_2d(ball.proj(ball.mobius_add(-a, self.state.points, project=False)))
        self._base = (float(self.state.curvature), moved)
        return self._requery(index)

    def reset(self) -> PoincareDiskView:
        """Back to the input points (the query and the sliders stay as they are)."""
        self._base = self._initial
        return self._requery(int(self.controls["query"].value))

    def _requery(self, index: int) -> PoincareDiskView:
        self.set(query=index)  # one redraw, even if the query is unchanged
        return self

    # -- model --------------------------------------------------------------------------
    def _points_at(self, curvature: float) -> np.ndarray:
        base_c, base = self._base
        if curvature == base_c:
            return base
        tangent = base if base_c is None else PoincareBall(base_c).logmap0(base)
        return np.atleast_2d(PoincareBall(curvature).expmap0(tangent))

    def _project(self, ball: PoincareBall, pts: np.ndarray) -> tuple[np.ndarray, str, float]:
        d = pts.shape[1]
        if d == 1:
            return np.column_stack([pts[:, 0], np.zeros(pts.shape[0])]), "disk", float("nan")
        if d == 2:
            return pts.copy(), "disk", float("nan")
        if self.projection == "first2":
            return np.atleast_2d(ball.proj(np.ascontiguousarray(pts[:, :2]))), "first2", float("nan")
        tangent = np.atleast_2d(ball.logmap0(pts))
        _, s, vt = np.linalg.svd(tangent, full_matrices=False)
        comps = vt[:2]
        flip = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
        comps = comps * flip[:, None]  # a fixed sign per component: the picture does not flip between updates
        plane = tangent @ comps.T
        if plane.shape[1] < 2:
            plane = np.column_stack([plane, np.zeros(plane.shape[0])])
        total = float((s**2).sum())
        explained = float((s[:2] ** 2).sum() / total) if total > 0 else 1.0
        return np.atleast_2d(ball.expmap0(np.ascontiguousarray(plane))), "pca", explained

    def compute(self) -> PoincareState:
        mech = self.mechanism
        self._apply_parameters(mech)  # validates c < 0, τ > 0
        c = float(mech.curvature)
        tau = float(mech.temperature)
        q = int(self.controls["query"].value)
        ball = PoincareBall(c)
        pts = self._points_at(c)
        n = pts.shape[0]
        check_id(self.name, "query (a point id)", q, n)
        if self.neighbours is not None:
            key_ids = self.neighbours.neighbours(q).copy()
        else:
            key_ids = np.delete(np.arange(n, dtype=np.int64), q)
        if key_ids.size == 0:
            raise EmptyInput(
                f"{self.name}: point {q} has no keys to attend over"
                + (" (its neighbour list is empty)." if self.neighbours is not None else " (it is the only point).")
            )
        weights = np.asarray(mech.weights(pts[q], pts[key_ids]), dtype=np.float64).mean(axis=0)
        distances = np.asarray(ball.dist(pts[q], pts[key_ids]), dtype=np.float64)
        shown, projection, explained = self._project(ball, pts)
        arcs = geodesic_arcs(ball, shown[q], shown[key_ids])
        bin_edges, arc_bin = bin_weights(weights)
        return PoincareState(
            query=q, curvature=c, temperature=tau, radius=1.0 / np.sqrt(ball.c), points=pts, key_ids=key_ids,
            weights=weights, distances=distances, shown=shown, arcs=arcs, arc_bin=arc_bin, bin_edges=bin_edges,
            projection=projection, explained=explained, translated=self._base is not self._initial,
            stats=analysis.summarize(weights[None, :], k=8),
        )  # fmt: skip

    # -- view ---------------------------------------------------------------------------
    def render(self, state: PoincareState) -> None:
        r = state.radius
        theta = np.linspace(0.0, 2 * np.pi, 241)
        self.figure.data[0].update(x=r * np.cos(theta), y=r * np.sin(theta))
        use_gl = state.key_ids.size > GL_EDGES
        traces = self.arc_traces
        samples = state.arcs.shape[1]
        for k in range(N_BINS):
            sel = np.flatnonzero(state.arc_bin == k)
            xy = np.full((sel.size, samples + 1, 2), np.nan)
            xy[:, :samples] = state.arcs[sel]
            # 1-D customdata (the key id of every sample; weight and distance are on the key's marker):
            # plotly sends 1-D arrays as binary buffers, 2-D ones as nested JSON lists, which made a
            # 1,000-arc update 3x slower and cannot carry NaN
            custom = np.repeat(state.key_ids[sel].astype(np.float64), samples + 1)
            label = f"{state.bin_edges[k]:.3f}–{state.bin_edges[k + 1]:.3f} ({sel.size})"
            for trace, active in ((traces[k], not use_gl), (traces[N_BINS + k], use_gl)):
                on = active and sel.size > 0
                trace.update(
                    x=xy[:, :, 0].ravel() if on else [], y=xy[:, :, 1].ravel() if on else [],
                    customdata=custom if on else None, name=label, showlegend=on,
                )  # fmt: skip
        others, keys, query = self.point_traces
        rest = np.setdiff1d(np.arange(state.shown.shape[0]), np.append(state.key_ids, state.query))
        others.update(x=state.shown[rest, 0], y=state.shown[rest, 1], customdata=rest[:, None].astype(np.float64),
                      showlegend=rest.size > 0)  # fmt: skip
        top = max(float(state.weights.max()), 1e-12)
        keys.update(
            x=state.shown[state.key_ids, 0], y=state.shown[state.key_ids, 1],
            customdata=np.column_stack([state.key_ids, state.weights, state.distances]).astype(np.float64),
            marker={"color": state.weights, "cmin": 0.0, "cmax": top, "size": 6.0 + 16.0 * state.weights / top},
        )  # fmt: skip
        query.update(x=state.shown[[state.query], 0], y=state.shown[[state.query], 1],
                     customdata=np.array([[float(state.query)]]))  # fmt: skip
        self.figure.layout.xaxis.range = [-1.06 * r, 1.06 * r]
        self.figure.layout.yaxis.range = [-1.06 * r, 1.06 * r]
        self.figure.layout.title.text = wrap_title(self.describe())

    def view_text(self) -> str:
        """Which 2-D picture of the ball is shown."""
        s = self.state
        if s is None or s.projection == "disk":
            return "the disk itself" if self.dim == 2 else "a 1-D ball drawn on the x-axis"
        if s.projection == "first2":
            return f"the first two coordinates of a {self.dim}-dimensional ball (a 2-D projection)"
        return (
            f"a 2-D PCA projection of a {self.dim}-dimensional ball (tangent space at the origin, "
            f"{s.explained:.0%} of the squared norm kept)"
        )

    def describe(self) -> str:
        if self.state is None:
            return self.name
        s = self.state
        near = int(np.argmin(s.distances))
        moved = "; Möbius-translated" if s.translated else ""
        return (
            f"{self.name}: query {s.query} over {s.key_ids.size} keys, c = {-s.curvature:.2f}, "
            f"τ = {s.temperature:.3g}; "
            f"entropy {s.stats['entropy']:.3f} nats (uniform {s.stats['uniform_entropy']:.3f}), nearest key "
            f"{int(s.key_ids[near])} (d = {s.distances[near]:.3f}, weight {s.weights[near]:.3f}); "
            f"{self.view_text()}{moved}"
        )
