"""What the API needs of acme_core: checked when acme_core is importable (inside a change set,
`tests/in_change.py` puts the changed library first on the path)."""

import unittest

try:
    import acme_core
except ImportError:  # acme_core is not installed here
    acme_core = None


@unittest.skipIf(acme_core is None, "acme_core is not importable here")
class CoreContractTest(unittest.TestCase):
    def test_slugify_makes_url_slugs(self) -> None:
        self.assertEqual(acme_core.slugify("Hello, World!"), "hello-world")

    def test_versions_compare(self) -> None:
        self.assertLess(acme_core.parse_version("0.3.0"), acme_core.parse_version("0.10.0"))
