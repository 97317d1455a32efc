"""Mixture-of-experts building blocks: the router (noisy top-k gating with capacity) and its trainer."""

from ruvattn.routing.router import Router, Routing, RoutingRecord, fit_router

__all__ = ["Router", "Routing", "RoutingRecord", "fit_router"]
