"""The permission tests run the functions on the integration tests' moto server."""

from __future__ import annotations

from tests.integration.conftest import local_stack, moto_endpoint  # noqa: F401 - fixtures
