"""The deployment tests need helm, kubeconform, hadolint and the offline schemas;
scripts/install-deploy-tools installs them. Without them those tests skip and say so."""

from __future__ import annotations

import pytest

from tests.deploy.chart import INSTALL_HINT, DeployTools, deploy_tools


@pytest.fixture(scope="session")
def tools() -> DeployTools:
    found = deploy_tools()
    if found is None:
        pytest.skip(INSTALL_HINT)
    return found
