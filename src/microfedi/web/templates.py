"""Locating the Jinja2 templates and static files, in a wheel or in a checkout."""

from __future__ import annotations

from pathlib import Path

from starlette.templating import Jinja2Templates


def templates_dir() -> Path:
    """`microfedi/templates` inside an installed wheel, else the repo's `templates/`."""
    package_dir = Path(__file__).resolve().parent.parent
    shipped = package_dir / "templates"
    if shipped.is_dir():
        return shipped
    checkout = package_dir.parent.parent / "templates"
    if checkout.is_dir():
        return checkout
    raise RuntimeError(f"templates not found in {shipped} or {checkout}; reinstall microfedi")


def make_templates() -> Jinja2Templates:
    from microfedi.federation.actors import iso_time

    templates = Jinja2Templates(directory=str(templates_dir()))
    templates.env.filters["isotime"] = iso_time
    return templates
