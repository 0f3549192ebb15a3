"""Tests for the slug and version helpers; run with `python3 -m unittest discover -s tests -t .`."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from acme_core import SemVer, parse_version, slugify


class SlugifyTest(unittest.TestCase):
    def test_lowercases_and_joins_words(self) -> None:
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_strips_accents(self) -> None:
        self.assertEqual(slugify("Crème Brûlée"), "creme-brulee")

    def test_custom_separator(self) -> None:
        self.assertEqual(slugify("a b c", separator="_"), "a_b_c")

    def test_empty_text_gives_empty_slug(self) -> None:
        self.assertEqual(slugify("  !!! "), "")


class ParseVersionTest(unittest.TestCase):
    def test_plain_version(self) -> None:
        self.assertEqual(parse_version("0.3.0"), SemVer(0, 3, 0))

    def test_leading_v_and_prerelease(self) -> None:
        version = parse_version("v1.2.3-rc.1")
        self.assertEqual(version, SemVer(1, 2, 3, "rc.1"))
        self.assertEqual(str(version), "1.2.3-rc.1")

    def test_versions_order_numerically(self) -> None:
        self.assertLess(parse_version("0.9.0"), parse_version("0.10.0"))

    def test_rejects_garbage(self) -> None:
        with self.assertRaises(ValueError) as caught:
            parse_version("1.2")
        self.assertIn("1.2", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
