# Not `pytest_plugins = [...]`: pytest refuses that outside the top-level conftest, which would
# break a plain `pytest` run from the repo root. Importing the fixtures registers them here;
# once tests/conftest.py loads the plugin, these names resolve to the very same functions.
from tests.support.fixtures import fake_ghl, mocked_http  # noqa: F401
