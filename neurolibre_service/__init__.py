"""NeuroLibre: living preprints built, executed and served by a JupyterHub service."""

__version__ = "0.1.0"

SERVICE_NAME = "neurolibre"
ADMIN_SCOPE = "custom:neurolibre:admin"
REVIEW_SCOPE = "custom:neurolibre:review"
